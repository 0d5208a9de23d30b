"""DICOM Structured Report of a grounded report: what a PACS stores and a radiologist's viewer shows.

The document is a Comprehensive 3D SR whose content follows TID 1500 (Measurement Report), built and
checked by ``highdicom`` (https://highdicom.readthedocs.io):

- one measurement group per findings sentence: TID 1410 (planar ROI) with the sentence's box as a
  closed POLYLINE ``SCOORD`` on the source image when the input was DICOM and the sentence was
  localised (one group per box, sharing the sentence's tracking identifier and UID), otherwise
  TID 1501 (image-level); the sentence is a TEXT "Finding" of its group (TID 1501 row 12 allows
  coded questions with text answers), each SAE feature behind it a NUM with its activation, and the
  algorithm (TID 4019: name, version, bundle) is named in every group;
- a sentence written by a finding rule carries the rule (condition, evidence, threshold, held-out
  AUROC) as a TEXT item of its group;
- a report without findings gets one image-level group with the report's own "nothing validated"
  statement and the active features (TID 1500 needs at least one group);
- a "Qualitative Evaluations" container (TID 1500 row 12) with the research-use-only statement and,
  for PNG/JPEG input, the reason the SR stands in a new study.

Header: verification flag UNVERIFIED, preliminary flag PRELIMINARY, completion flag COMPLETE; saerad and
its bundle as the device observer, in General Equipment and in Contributing Equipment. For DICOM input
the SR joins the source study (patient and study modules copied by highdicom from the source header,
which is listed as evidence and in the image library); for PNG/JPEG input it starts a new study with an
empty patient identity. SCOORD3D is never used: a projection radiograph has no patient-based frame of
reference for 3D coordinates. What each field holds is listed in docs/deployment.md.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

import saerad
from saerad.errors import SaeradError
from saerad.report.schema import Box, GroundedReport

if TYPE_CHECKING:
    from pydicom import Dataset

#: Private coding scheme of saerad's own concepts ("99" marks a local scheme in DICOM PS3.16 8.2).
SCHEME = "99SAERAD"
SERIES_NUMBER = 990
SERIES_DESCRIPTION = "saerad AI findings - UNVERIFIED - research use only"
RESEARCH_USE_ONLY = (
    "AI-generated findings (saerad), UNVERIFIED: no clinician has reviewed them. For research use only; "
    "not a medical device and not a clinical report."
)
NEW_STUDY_NOTE = (
    "The input was a {fmt} file, not DICOM: this SR starts a new study with no patient identity, and "
    "its regions are given as text fractions of the image because SCOORD needs a DICOM source image."
)
_UTF8 = "ISO_IR 192"
_IMAGE_SOP_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
# Type 2 attributes highdicom reads from the source header; absent ones are copied as empty values.
_TYPE2_DEFAULTS = {
    "PatientID": "", "PatientName": "", "PatientBirthDate": "", "PatientSex": "", "AccessionNumber": "",
    "StudyID": "", "StudyDate": "", "StudyTime": "", "ReferringPhysicianName": "",
}

# highdicom logs source UIDs at INFO while it copies modules; UIDs identify a patient's study.
logging.getLogger("highdicom").setLevel(logging.WARNING)


class DicomSRError(SaeradError):
    """A DICOM SR cannot be built for this report or source (e.g. the source lacks its UIDs)."""

    code = "dicom_sr_failed"
    http_status = 422


@dataclass
class SRFinding:
    """One finding read back from an SR: what a viewer shows for one sentence."""

    text: str
    tracking_uid: str
    features: dict[int, float] = field(default_factory=dict)
    regions: list[np.ndarray] = field(default_factory=list)  # (N, 2) column, row pixel coordinates
    region_text: list[str] = field(default_factory=list)
    rule: str | None = None


def to_dicom_sr(
    report: GroundedReport,
    source: Dataset | None = None,
    *,
    source_format: str | None = None,
    institution_name: str | None = None,
) -> Dataset:
    """The report as a Comprehensive 3D SR (a ``highdicom.sr.Comprehensive3DSR``, a pydicom Dataset).

    ``source`` is the header of the DICOM image the report describes (``XRay.dicom``); without one
    the SR starts a new study. Raises :class:`DicomSRError` with a message for the user.
    """
    # highdicom warns about odd source values by quoting them (e.g. a one-part patient name): that must
    # not reach stderr or the logs. A filter (re)installed per call rather than ``catch_warnings``,
    # which is not thread-safe (SRs are built in the service's worker threads); installing an identical
    # filter again replaces it, so the list does not grow.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom(\.|$)")
    evidence, image = _evidence(source)
    try:
        sr = _build(report, evidence, image, source_format, institution_name)
    except (ValueError, TypeError, KeyError) as exc:
        # highdicom's messages may quote source UIDs: keep them out of what the user and logs see.
        raise DicomSRError(f"cannot build a DICOM SR for this report ({type(exc).__name__} in highdicom)") from exc
    if image is None:
        # The synthetic header only carried a new study's identity; it is no evidence of anything.
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                del sr[keyword]
    else:
        _drop_invalid_copies(sr, evidence)
    return sr


def _build(report: GroundedReport, evidence: Dataset, image: Dataset | None, source_format: str | None,
           institution_name: str | None) -> Dataset:
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(report),
        procedure_reported=_procedure_code(),
        imaging_measurements=_groups(report, image, _algorithm(report)),
        referenced_images=_library(image),
    )
    content[0].ContentSequence.append(_qualitative_evaluations(report, image, source_format))
    label = _bundle_label(report.bundle or {})
    return hd.sr.Comprehensive3DSR(
        evidence=[evidence],
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="saerad",
        manufacturer_model_name=_lo(label),
        software_versions=[f"saerad {saerad.__version__}", _lo(f"bundle {label}")],
        series_description=SERIES_DESCRIPTION,
        institution_name=institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        specific_character_set=_UTF8,
        contributing_equipment=[_equipment(report)],
        coding_schemes=[CodingSchemeIdentificationItem(
            designator=SCHEME, name="saerad sparse autoencoder features and annotations",
            responsible_organization="saerad",
        )],
    )


def sr_bytes(sr: Dataset) -> bytes:
    """The SR as a DICOM Part 10 file (preamble, file meta, explicit VR little endian)."""
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_findings(dataset: Dataset) -> list[SRFinding]:
    """The findings of an SR written by :func:`to_dicom_sr`, parsed back with highdicom."""
    import highdicom as hd
    from highdicom.sr import GraphicTypeValues, ValueTypeValues

    sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    groups = list(sr.content.get_planar_roi_measurement_groups()) + list(sr.content.get_image_measurement_groups())
    by_uid: dict[str, SRFinding] = {}
    for group in groups:
        uid = str(group.tracking_uid)
        finding = by_uid.get(uid)
        if finding is None:
            text = next(
                (i.TextValue for i in group[0].ContentSequence if i.ValueType == "TEXT" and _named(i, "121071", "DCM")),
                "",
            )
            finding = by_uid[uid] = SRFinding(text=text, tracking_uid=uid)
        for item in group[0].ContentSequence:
            if item.ValueType == ValueTypeValues.NUM.value and _scheme(item) == SCHEME:
                finding.features[int(_code(item)[1:])] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == ValueTypeValues.TEXT.value and _named(item, "REGION", SCHEME):
                finding.region_text.append(item.TextValue)
            elif item.ValueType == ValueTypeValues.TEXT.value and _named(item, "RULE", SCHEME):
                finding.rule = item.TextValue
        roi = getattr(group, "roi", None)
        if roi is not None and roi.graphic_type == GraphicTypeValues.POLYLINE:
            finding.regions.append(np.asarray(roi.value, dtype=float))
    return list(by_uid.values())


# ------------------------------------------------------------------------------------- content


def _groups(report: GroundedReport, image: Dataset | None, algorithm: Any) -> list:
    import highdicom as hd

    groups: list = []
    for index, sentence in enumerate(report.findings, start=1):
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Finding {index}")
        measurements = [_feature_measurement(f.id, f.activation) for f in sentence.features]
        boxes = sentence.boxes or []
        if image is not None and boxes:
            for box in boxes:
                group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_region=_image_region(box, image),
                    algorithm_id=algorithm,
                    measurements=measurements,
                )
                _add_text(group, _finding_concept(), sentence.text)
                _add_rule(group, sentence)
                groups.append(group)
            continue
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            algorithm_id=algorithm,
            measurements=measurements,
            source_images=[_source_for_group(image)] if image is not None else None,
        )
        _add_text(group, _finding_concept(), sentence.text)
        _add_rule(group, sentence)
        for box in boxes:  # PNG/JPEG input: no DICOM image for a SCOORD to point at
            _add_text(group, _region_concept(), _box_text(box))
        groups.append(group)
    if not groups:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="No validated finding"),
            algorithm_id=algorithm,
            measurements=[_feature_measurement(f.id, f.activation) for f in report.features],
            source_images=[_source_for_group(image)] if image is not None else None,
        )
        _add_text(group, _finding_concept(), report.text())  # the report's own "nothing validated" statement
        groups.append(group)
    return groups


def _feature_measurement(feature_id: int, activation: float):
    import highdicom as hd
    from pydicom.sr.coding import Code

    return hd.sr.Measurement(
        name=Code(f"F{feature_id}", SCHEME, f"SAE feature {feature_id} activation"),
        value=round(float(activation), 6),
        unit=Code("1", "UCUM", "no units"),
    )


def _image_region(box: Box, image: Dataset):
    import highdicom as hd

    rows, cols = int(image.Rows), int(image.Columns)
    # SR pixel coordinates: (0, 0) is the top left corner of the top left pixel (PS3.3 C.18.6.1.2).
    x0, x1 = box.x_min * cols, max(box.x_max * cols, box.x_min * cols + 1.0)
    y0, y1 = box.y_min * rows, max(box.y_max * rows, box.y_min * rows + 1.0)
    polyline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polyline,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
            referenced_frame_numbers=_first_frame(image),
        ),
    )


def _library(image: Dataset | None) -> list[Dataset] | None:
    """The image library (TID 1600, optional): highdicom describes a projection radiograph from its
    PatientOrientation and ImagerPixelSpacing; without them the source is referenced as evidence only."""
    import highdicom as hd

    if image is None:
        return None
    try:
        hd.sr.ImageLibraryEntryDescriptors(image)
    except (AttributeError, IndexError, ValueError, TypeError):
        return None
    return [image]


def _source_for_group(image: Dataset):
    import highdicom as hd

    return hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=image.SOPClassUID,
        referenced_sop_instance_uid=image.SOPInstanceUID,
        referenced_frame_numbers=_first_frame(image),
    )


def _first_frame(image: Dataset) -> list[int] | None:
    # saerad decodes the first frame of a multi-frame image; its regions refer to that frame.
    return [1] if int(image.get("NumberOfFrames", 1) or 1) > 1 else None


def _add_text(group, name, text: str) -> None:
    from highdicom.sr import RelationshipTypeValues, TextContentItem

    item = TextContentItem(name=name, value=text, relationship_type=RelationshipTypeValues.CONTAINS)
    group[0].ContentSequence.append(item)


def _add_rule(group, sentence) -> None:
    """A sentence written by a finding rule says which rule and how strongly its voters reached it."""
    from highdicom.sr import CodedConcept

    rule = sentence.rule
    if rule is None:
        return
    auroc = "" if rule.held_out_auroc is None else f", held-out AUROC {rule.held_out_auroc:.2f}"
    text = f"{rule.condition}: evidence {rule.evidence:.3f} >= threshold {rule.threshold:.3f}{auroc}"
    _add_text(group, CodedConcept("RULE", SCHEME, "Finding rule of the SAE features"), text)


def _qualitative_evaluations(report: GroundedReport, image: Dataset | None, source_format: str | None):
    from highdicom.sr import CodedConcept, ContainerContentItem, RelationshipTypeValues, TextContentItem

    container = ContainerContentItem(
        name=CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    comments = [RESEARCH_USE_ONLY]
    if image is None:
        comments.append(NEW_STUDY_NOTE.format(fmt=(source_format or "non-DICOM").upper()))
    comments.extend(report.notes)  # composer notes: never report text (GroundedReport's contract)
    container.ContentSequence = [
        TextContentItem(name=CodedConcept("121106", "DCM", "Comment"), value=text,
                        relationship_type=RelationshipTypeValues.CONTAINS)
        for text in comments
    ]
    return container


def _finding_concept():
    from highdicom.sr import CodedConcept

    return CodedConcept("121071", "DCM", "Finding")


def _region_concept():
    from highdicom.sr import CodedConcept

    return CodedConcept("REGION", SCHEME, "Image region as fractions of width and height")


def _box_text(box: Box) -> str:
    return f"x {box.x_min:.3f}-{box.x_max:.3f}, y {box.y_min:.3f}-{box.y_max:.3f} (fractions of width, height)"


def _procedure_code():
    from highdicom.sr import CodedConcept

    return CodedConcept("36554-4", "LN", "XR Chest Single view")


# ------------------------------------------------------------------------------ identity, header


def _bundle_label(bundle: dict[str, Any]) -> str:
    return f"{bundle.get('name', 'unknown')} {bundle.get('version', '')}".strip()


def _algorithm(report: GroundedReport):
    import highdicom as hd

    bundle = report.bundle or {}
    parameters = [f"bundle {_bundle_label(bundle)}", f"encoder {bundle.get('encoder', 'unknown')}",
                  f"composer {report.composer}"]
    return hd.sr.AlgorithmIdentification(name="saerad", version=saerad.__version__, parameters=parameters)


def _observation_context(report: GroundedReport):
    import highdicom as hd
    from pydicom.uid import generate_uid

    label = _bundle_label(report.bundle or {})
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # One stable UID per software version and bundle, so a PACS can group this device's reports.
        uid=generate_uid(entropy_srcs=["saerad", saerad.__version__, label]),
        name="saerad",
        manufacturer_name="saerad",
        model_name=_lo(label),
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
            observer_identifying_attributes=device,
        )
    )


def _equipment(report: GroundedReport):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    label = _bundle_label(report.bundle or {})
    return hd.ContributingEquipment(
        manufacturer="saerad",
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=_lo(label),
        software_versions=[f"saerad {saerad.__version__}", _lo(f"bundle {label}")],
        contribution_description="Findings composed from sparse autoencoder features; unverified, research use only",
    )


def _evidence(source: Dataset | None) -> tuple[Dataset, Dataset | None]:
    """(header highdicom copies patient and study from, the referenced image or None)."""
    from pydicom import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    if source is None:
        now = datetime.now()
        header = Dataset()
        header.update({k: v for k, v in _TYPE2_DEFAULTS.items()})
        header.StudyInstanceUID = generate_uid()
        header.StudyDate, header.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        # Identity of a placeholder: highdicom needs an evidence dataset; it is removed afterwards.
        header.SeriesInstanceUID, header.SOPInstanceUID = generate_uid(), generate_uid()
        header.SOPClassUID = SecondaryCaptureImageStorage
        return header, None
    missing = [k for k in _IMAGE_SOP_KEYWORDS if not str(source.get(k, "") or "").strip()]
    if missing:
        raise DicomSRError(f"the source DICOM has no {', '.join(missing)}, so a DICOM SR cannot reference it")
    if "Rows" not in source or "Columns" not in source:
        raise DicomSRError("the source DICOM has no Rows/Columns, so a DICOM SR cannot point at regions in it")
    header = Dataset()
    header.update(source)  # shallow: the caller's dataset is left as it is
    for keyword, empty in _TYPE2_DEFAULTS.items():
        if keyword not in header or header[keyword].value is None:
            setattr(header, keyword, empty)
    return header, header


def _drop_invalid_copies(sr: Dataset, source: Dataset) -> None:
    """Remove optional attributes copied from the source whose values break their VR (e.g. a Patient's
    Age of "62" instead of "062Y"): a PACS that validates on ingest would refuse the whole SR for them.
    Type 1 and 2 values (UIDs, patient id and name, dates) are kept as the source has them, so the SR
    still files under the same patient and study."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    keep = {*_IMAGE_SOP_KEYWORDS, *_TYPE2_DEFAULTS}
    for element in list(sr):
        copied = element.tag in source and source[element.tag].value == element.value
        if not copied or element.keyword in keep or element.VR == "SQ" or element.value is None:
            continue
        values = list(element.value) if element.VM > 1 else [element.value]
        try:
            for value in values:
                validate_value(element.VR, value if isinstance(value, (str, bytes)) else str(value), config.RAISE)
        except (ValueError, TypeError):
            del sr[element.tag]


def _lo(text: str) -> str:
    """A value for a DICOM LO element (at most 64 characters)."""
    return text if len(text) <= 64 else text[:63] + "~"


def _code(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _scheme(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodingSchemeDesignator)


def _named(item, value: str, scheme: str) -> bool:
    return _code(item) == value and _scheme(item) == scheme


__all__ = ["DicomSRError", "SRFinding", "read_findings", "sr_bytes", "to_dicom_sr"]
