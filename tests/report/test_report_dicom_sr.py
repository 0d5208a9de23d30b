"""DICOM SR of a grounded report: built with highdicom, read back with highdicom and pydicom, and
checked by the validators the DICOM community uses (dciodvfy from dicom3tools for the IOD, modules
and value representations; dsrdump from dcmtk for the SR content-tree relationship constraints)."""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_builders import PATIENT_ID, PATIENT_NAME, dicom_bytes, make_radiograph

from saerad.report.dicom_sr import (
    RESEARCH_USE_ONLY,
    SERIES_DESCRIPTION,
    DicomSRError,
    read_findings,
    sr_bytes,
    to_dicom_sr,
)
from saerad.report.schema import NOTHING_VALIDATED, Box, FeatureRef, GroundedReport, RuleEvidence, Sentence

EFFUSION_BOXES = [Box(x_min=0.5, y_min=0.5, x_max=0.9, y_max=0.95), Box(x_min=0.1, y_min=0.6, x_max=0.3, y_max=0.8)]


def _report(boxes=None, findings=True) -> GroundedReport:
    effusion = FeatureRef(id=3, activation=1.5, description="Small left pleural effusion.")
    heart = FeatureRef(id=11, activation=0.7, description="Cardiomegaly.")
    rule = RuleEvidence(condition="Cardiomegaly", evidence=0.95, threshold=0.5, held_out_auroc=0.81)
    sentences = [
        Sentence(text="Small left pleural effusion.", features=[effusion], boxes=boxes),
        Sentence(text="Cardiomegaly.", features=[heart, FeatureRef(id=12, activation=0.25)], rule=rule),
    ]
    return GroundedReport(
        status="findings" if findings else "nothing_validated",
        findings=sentences if findings else [],
        features=[effusion, heart],
        bundle={"name": "tiny", "version": "1", "encoder": "hf:encoder"},
        notes=["the LLM rewrite was rejected"],
    )


def _roundtrip(sr) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(sr_bytes(sr)))


def _texts(ds: pydicom.Dataset) -> list[str]:
    out = []

    def walk(items):
        for item in items:
            if item.ValueType == "TEXT":
                out.append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return out


def test_sr_joins_the_source_study_with_regions_on_the_source_image():
    source = make_radiograph(rows=200, cols=100)
    header = pydicom.dcmread(io.BytesIO(dicom_bytes(source)), stop_before_pixels=True)
    ds = _roundtrip(to_dicom_sr(_report(boxes=EFFUSION_BOXES), header))

    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage and ds.Modality == "SR"
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (PATIENT_ID, PATIENT_NAME, "19600101", "F")
    assert (ds.AccessionNumber, ds.StudyDate) == ("ACC-1", "20240102")
    assert (ds.VerificationFlag, ds.CompletionFlag, ds.PreliminaryFlag) == ("UNVERIFIED", "COMPLETE", "PRELIMINARY")
    assert ds.SeriesDescription == SERIES_DESCRIPTION and ds.Manufacturer == "saerad"
    assert list(ds.SoftwareVersions) == ["saerad 0.1.0", "bundle tiny 1"]
    assert [e.Manufacturer for e in ds.ContributingEquipmentSequence][0] == "saerad"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert RESEARCH_USE_ONLY in _texts(ds) and "the LLM rewrite was rejected" in _texts(ds)

    findings = read_findings(ds)
    assert [f.text for f in findings] == ["Small left pleural effusion.", "Cardiomegaly."]
    assert findings[0].features == {3: 1.5} and findings[1].features == {11: 0.7, 12: 0.25}
    assert findings[0].rule is None
    assert findings[1].rule == "Cardiomegaly: evidence 0.950 >= threshold 0.500, held-out AUROC 0.81"
    # one closed polyline per box, in pixels of the 100 x 200 source (x = column, y = row)
    assert len(findings[0].regions) == 2 and findings[1].regions == []
    np.testing.assert_allclose(findings[0].regions[0], [[50, 100], [90, 100], [90, 190], [50, 190], [50, 100]])
    import highdicom as hd

    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    group = sr.content.get_planar_roi_measurement_groups()[0]
    assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert str(group.tracking_identifier) == "Finding 1"
    observer = sr.content.get_observer_contexts()[0]
    assert observer.observer_identifying_attributes.name == "saerad"


def test_png_input_starts_a_new_study_and_says_so():
    ds = _roundtrip(to_dicom_sr(_report(boxes=EFFUSION_BOXES), None, source_format="png"))
    assert ds.StudyInstanceUID and ds.PatientID == "" and str(ds.PatientName) == ""
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds and "PertinentOtherEvidenceSequence" not in ds
    assert any("input was a PNG file" in t and "new study" in t for t in _texts(ds))
    findings = read_findings(ds)
    assert findings[0].regions == [] and findings[0].region_text[0].startswith("x 0.500-0.900, y 0.500-0.950")
    other = _roundtrip(to_dicom_sr(_report(), None, source_format="png"))
    assert other.StudyInstanceUID != ds.StudyInstanceUID


def test_report_without_findings_lists_its_active_features():
    ds = _roundtrip(to_dicom_sr(_report(findings=False), None))
    [finding] = read_findings(ds)
    assert finding.text == NOTHING_VALIDATED and finding.features == {3: 1.5, 11: 0.7}


def test_invalid_optional_source_values_are_dropped_and_identity_kept(caplog):
    source = make_radiograph()
    with pytest.warns(UserWarning, match="AS"):
        source.PatientAge = "64"  # invalid AS (needs "064Y"), as in real-world files
    caplog.clear()
    ds = _roundtrip(to_dicom_sr(_report(), source))
    assert "PatientAge" not in ds and ds.PatientID == PATIENT_ID
    assert "'64'" not in caplog.text and PATIENT_ID not in caplog.text


def test_source_without_uids_is_refused():
    source = make_radiograph()
    del source.SOPInstanceUID
    with pytest.raises(DicomSRError, match="SOPInstanceUID"):
        to_dicom_sr(_report(), source)


def test_no_warning_or_log_repeats_patient_data(caplog):
    source = make_radiograph(patient_name="SingleComponentName")  # highdicom warns about such names
    caplog.set_level("DEBUG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)  # everything not filtered on purpose is recorded
        to_dicom_sr(_report(), source)
    assert not [w for w in caught if "SingleComponentName" in str(w.message)]
    assert "SingleComponentName" not in caplog.text and source.SOPInstanceUID not in caplog.text


def test_fixture_dicom_report_round_trip(fixtures_dir):
    from saerad.imaging import load_xray

    xray = load_xray(fixtures_dir / "Fake_MONOHR1.dcm")
    ds = _roundtrip(to_dicom_sr(_report(boxes=EFFUSION_BOXES), xray.dicom, source_format=xray.source_format))
    assert ds.StudyInstanceUID == xray.dicom.StudyInstanceUID
    assert len(read_findings(ds)[0].regions) == 2


# ------------------------------------------------------------------------------------ validators


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}; `bash scripts/install.sh test` as root)")
    return path


@pytest.mark.parametrize("kind", ["dicom-with-boxes", "dicom-no-boxes", "png-with-boxes", "no-findings"])
def test_dciodvfy_and_dsrdump_find_no_errors(tmp_path: Path, kind: str):
    dciodvfy, dsrdump = _tool("dciodvfy", "dicom3tools"), _tool("dsrdump", "dcmtk")
    source = make_radiograph() if kind.startswith("dicom") else None
    report = _report(boxes=None if kind == "dicom-no-boxes" else EFFUSION_BOXES, findings=kind != "no-findings")
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(to_dicom_sr(report, source, source_format="png")))

    iod = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (iod.stdout + iod.stderr).splitlines()
    assert "Comprehensive3DSR" in lines
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], "\n".join(lines)
    # what remains are warnings about the private coding scheme and empty type 2 DICOMDIR keys
    assert all(w.startswith("Warning") for w in lines if w != "Comprehensive3DSR"), "\n".join(lines)

    tree = subprocess.run([dsrdump, str(path)], capture_output=True, text=True, timeout=60)
    assert tree.returncode == 0, tree.stderr
    problems = [line for line in tree.stderr.splitlines() if line.startswith("E:")]
    assert problems == [], tree.stderr
    assert "Verification Flag   : UNVERIFIED" in tree.stdout


def test_validators_catch_a_broken_tree(tmp_path: Path):
    """The check above can fail: dsrdump rejects a relationship the SR IOD forbids."""
    dsrdump = _tool("dsrdump", "dcmtk")
    ds = _roundtrip(to_dicom_sr(_report(), make_radiograph()))
    measurements = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    measurements.ContentSequence[0].ContentSequence[-1].RelationshipType = "SELECTED FROM"
    path = tmp_path / "broken.dcm"
    ds.save_as(path)
    tree = subprocess.run([dsrdump, str(path)], capture_output=True, text=True, timeout=60)
    assert any(line.startswith("E:") for line in tree.stderr.splitlines())
