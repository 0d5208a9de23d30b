"""Against a real Orthanc: find the frontal image over QIDO-RS, pull it over WADO-RS, report it, store
the SR with STOW-RS, and read the SR back from Orthanc; PACS failures become clear errors."""

from __future__ import annotations

import base64
import io
import json

import pydicom
import pytest
from dicom_builders import PATIENT_ID, dicom_bytes, make_radiograph
from orthanc import PASSWORD, USER
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from saerad.pacs import NoFrontalImageError, PacsError, PacsSettings, StudyNotFoundError
from saerad.pacs.client import PacsClient
from saerad.pacs.study import report_study
from saerad.report.dicom_sr import read_findings

FIXTURE_MONO2 = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _upload_study(orthanc, views, **kwargs) -> tuple[str, dict[str, pydicom.Dataset]]:
    study = generate_uid()
    instances = {}
    for seed, view in enumerate(views):
        ds = make_radiograph(study_uid=study, view=view, seed=seed, **kwargs)
        orthanc.upload(dicom_bytes(ds))
        instances[view] = ds
    return study, instances


def _stored_sr(orthanc, study: str, sop_uid: str) -> pydicom.Dataset:
    [row] = [i for i in orthanc.study_instances(study) if i["MainDicomTags"]["SOPInstanceUID"] == sop_uid]
    return pydicom.dcmread(io.BytesIO(orthanc.instance_file(row["ID"])))


def test_pull_report_store_and_read_back(orthanc, pacs_settings, pacs_reporter):
    study, instances = _upload_study(orthanc, ["LL", "AP", "PA"])
    outcome = report_study(pacs_reporter, PacsClient(pacs_settings), study, store=True)

    assert outcome.image.sop_uid == instances["PA"].SOPInstanceUID and outcome.image.view == "PA"
    assert outcome.skipped == {instances["LL"].SOPInstanceUID: "lateral view"}
    assert outcome.stored is not None and outcome.stored.retrieve_url.endswith(str(outcome.sr.SOPInstanceUID))
    summary = outcome.summary()
    assert summary["sr"]["stored"] is True and json.dumps(summary)  # JSON-able

    stored = _stored_sr(orthanc, study, str(outcome.sr.SOPInstanceUID))  # Orthanc's copy, not ours
    assert stored.Modality == "SR" and stored.StudyInstanceUID == study and stored.PatientID == PATIENT_ID
    assert stored.VerificationFlag == "UNVERIFIED"
    evidence = stored.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == instances["PA"].SOPInstanceUID
    findings = read_findings(stored)
    expected = [s.text for s in outcome.report.findings] or [outcome.report.text()]
    assert [f.text for f in findings] == expected
    assert len(orthanc.study_instances(study)) == 4  # three images and the SR


def test_fixture_dicom_study(orthanc, pacs_settings, pacs_reporter, fixtures_dir):
    """The real JPEG-compressed fixture, pulled in its stored transfer syntax, plus a lateral copy."""
    data = (fixtures_dir / FIXTURE_MONO2).read_bytes()
    orthanc.upload(data)
    fixture = pydicom.dcmread(io.BytesIO(data))
    lateral = pydicom.dcmread(io.BytesIO(data))
    lateral.SOPInstanceUID = lateral.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    lateral.ViewPosition = "LL"
    orthanc.upload(dicom_bytes(lateral))

    outcome = report_study(pacs_reporter, PacsClient(pacs_settings), str(fixture.StudyInstanceUID), store=True)
    assert outcome.image.sop_uid == fixture.SOPInstanceUID
    assert outcome.xray.dicom.file_meta.TransferSyntaxUID == fixture.file_meta.TransferSyntaxUID  # no transcoding
    assert outcome.xray.original_size == (fixture.Rows, fixture.Columns)
    stored = _stored_sr(orthanc, str(fixture.StudyInstanceUID), str(outcome.sr.SOPInstanceUID))
    assert stored.StudyInstanceUID == fixture.StudyInstanceUID and stored.PatientID == fixture.PatientID


def test_study_without_a_frontal_image(orthanc, pacs_settings, pacs_reporter):
    study, instances = _upload_study(orthanc, ["LL"])
    with pytest.raises(NoFrontalImageError, match="lateral view"):
        report_study(pacs_reporter, PacsClient(pacs_settings), study)
    forced = report_study(pacs_reporter, PacsClient(pacs_settings), study, instance=instances["LL"].SOPInstanceUID)
    assert forced.image.view == "LL" and forced.stored is None
    assert len(orthanc.study_instances(study)) == 1  # nothing stored without store=True


def test_pacs_errors_are_clear(orthanc, pacs_settings, pacs_reporter):
    with pytest.raises(StudyNotFoundError):
        report_study(pacs_reporter, PacsClient(pacs_settings), generate_uid())
    study, _ = _upload_study(orthanc, ["PA"])
    wrong = pacs_settings.model_copy(update={"password": None})
    with pytest.raises(PacsError) as info:
        report_study(pacs_reporter, PacsClient(wrong), study)
    assert info.value.code == "pacs_unauthorized" and PASSWORD not in str(info.value)
    closed = PacsSettings(url="http://127.0.0.1:9/dicom-web", timeout_s=2, retries=1)
    with pytest.raises(PacsError) as info:
        report_study(pacs_reporter, PacsClient(closed), study)
    assert info.value.code == "pacs_unreachable"
    with pytest.raises(PacsError, match="no PACS configured"):
        PacsClient(PacsSettings(url=None))


def test_authentication_by_configured_header(orthanc, pacs_settings, pacs_reporter):
    study, _ = _upload_study(orthanc, ["PA"])
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    settings = PacsSettings(url=orthanc.dicomweb, headers={"Authorization": f"Basic {basic}"}, retries=1)
    assert "Basic" not in repr(settings)  # header values are secrets
    assert report_study(pacs_reporter, PacsClient(settings), study).image.view == "PA"


def test_cli_pacs_report(orthanc, pacs_reporter, tmp_path, monkeypatch):
    import saerad.cli.pacs  # noqa: F401 - registers `pacs`
    import saerad.cli.report  # noqa: F401 - typer needs two commands for group mode
    from saerad.cli import app

    monkeypatch.setenv("SAERAD_PACS_USERNAME", USER)
    monkeypatch.setenv("SAERAD_PACS_PASSWORD", PASSWORD)
    study, instances = _upload_study(orthanc, ["PA", "LL"])
    bundle = pacs_reporter.bundle.path
    out = tmp_path / "report.sr.dcm"
    result = CliRunner().invoke(app, ["pacs", "report", "--url", orthanc.dicomweb, "--study", study, "--store",
                                      "--format", "json", "--out", str(out), "--bundle", str(bundle)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["image"]["sop_instance_uid"] == instances["PA"].SOPInstanceUID and body["sr"]["stored"] is True
    assert body["report"]["research_use_only"] is True
    assert f"skipped {instances['LL'].SOPInstanceUID}: lateral view" in result.stderr
    assert pydicom.dcmread(out).SOPInstanceUID == body["sr"]["sop_instance_uid"]

    missing = CliRunner().invoke(app, ["pacs", "report", "--url", orthanc.dicomweb, "--study", generate_uid(),
                                       "--bundle", str(bundle)])
    assert isinstance(missing.exception, StudyNotFoundError)  # saerad.cli.main prints it as one line, exit 2
