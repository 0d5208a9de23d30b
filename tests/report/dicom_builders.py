"""Synthetic DICOM radiographs for tests: real Part 10 files (pydicom), random pixels, made-up patients.

Use from any test folder::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))   # tests/report
    from dicom_builders import make_radiograph, dicom_bytes
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_ID = "SAERAD-TEST-0001"
PATIENT_NAME = "Testpatient^Alice"


def make_radiograph(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    view: str | None = "PA",
    sop_class: str = ComputedRadiographyImageStorage,
    modality: str = "CR",
    body_part: str | None = "CHEST",
    rows: int = 64,
    cols: int = 48,
    seed: int = 0,
    patient_id: str = PATIENT_ID,
    patient_name: str = PATIENT_NAME,
) -> Dataset:
    """A 12-bit MONOCHROME2 radiograph with the attributes a PACS indexes."""
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19600101", "F", "064Y"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "ACC-1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.PatientOrientation = ["P", "F"] if view == "AP" else ["A", "F"]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
