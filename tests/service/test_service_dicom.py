"""Hospital-facing outputs of the service: DICOM SR and FHIR transaction Bundle for uploads, and study
reports pulled from a real Orthanc as jobs (``POST /v1/studies/{uid}/report``)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pacs"))
from dicom_builders import PATIENT_ID, PATIENT_NAME, dicom_bytes, make_radiograph  # noqa: E402
from orthanc import PASSWORD, USER, running_orthanc  # noqa: E402

from saerad.pacs import PacsSettings  # noqa: E402
from saerad.report.dicom_sr import read_findings  # noqa: E402


def _upload(ds: pydicom.Dataset) -> dict:
    return {"file": ("image.dcm", dicom_bytes(ds))}


@pytest.fixture
def client(start_server):
    """A server on the session's reporter (the module-scoped ``server`` would load a bundle again)."""
    with start_server().client() as c:
        yield c


def test_dicom_sr_and_fhir_bundle_formats(client):
    source = make_radiograph()
    r = client.post("/v1/reports", params={"format": "dicom-sr"}, files=_upload(source))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(r.content))
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == PATIENT_ID
    assert f'filename="{sr.SOPInstanceUID}.dcm"' in r.headers["content-disposition"]

    r = client.post("/v1/reports", params={"format": "fhir-bundle"}, files=_upload(source))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{source.StudyInstanceUID}"


def test_localized_dicom_sr_job_has_regions_on_the_uploaded_image(start_server, wait_job):
    server = start_server(localize_steps=2)
    source = make_radiograph(rows=96, cols=80)
    with server.client() as c:
        r = c.post("/v1/reports", params={"localize": "true", "format": "dicom-sr"}, files=_upload(source))
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["job_id"])
        assert done["state"] == "done", done
        sr_file = c.get(done["result"]["sr_file"])
    assert sr_file.status_code == 200 and sr_file.headers["content-type"] == "application/dicom"
    findings = read_findings(pydicom.dcmread(io.BytesIO(sr_file.content)))
    boxed = [s for s in done["result"]["report"]["findings"] if s["boxes"]]
    assert boxed, "the tiny diffusion model localises at least one sentence"
    regions = [r for f in findings for r in f.regions]
    assert len(regions) == sum(len(s["boxes"]) for s in boxed)
    assert all(0 <= r[:, 0].min() and r[:, 0].max() <= 80 and r[:, 1].max() <= 96 for r in regions)


def test_study_endpoint_without_a_pacs_or_with_a_bad_uid(client):
    r = client.post(f"/v1/studies/{generate_uid()}/report")
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_pacs_configured"
    r = client.post("/v1/studies/not-a-uid/report")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_options"
    assert client.get("/v1/jobs/unknown/sr.dcm").status_code == 404


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def test_study_report_jobs_against_orthanc(orthanc, start_server, wait_job, log_capture):
    study = generate_uid()
    pa, lateral = make_radiograph(study_uid=study, view="PA"), make_radiograph(study_uid=study, view="LL", seed=1)
    for ds in (pa, lateral):
        orthanc.upload(dicom_bytes(ds))
    settings = PacsSettings(url=orthanc.dicomweb, username=USER, password=PASSWORD, retries=1)
    server = start_server(pacs=settings)
    with server.client() as c:
        r = c.post(f"/v1/studies/{study}/report", params={"store": "true", "format": "fhir-bundle"})
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["job_id"])
        assert done["state"] == "done", done
        result = done["result"]
        assert result["image"]["sop_instance_uid"] == pa.SOPInstanceUID and result["sr"]["stored"] is True
        assert result["skipped"] == [{"sop_instance_uid": lateral.SOPInstanceUID, "reason": "lateral view"}]
        assert result["fhir"]["type"] == "transaction"
        sr = pydicom.dcmread(io.BytesIO(c.get(result["sr_file"]).content))
        assert str(sr.SOPInstanceUID) == result["sr"]["sop_instance_uid"]

        failures = {}
        for uid, params in ((generate_uid(), {}), (study, {"instance": generate_uid()})):
            job = c.post(f"/v1/studies/{uid}/report", params=params).json()["job_id"]
            status = wait_job(c, job)
            assert status["state"] == "failed"
            failures[status["error"]["code"]] = status["error"]["message"]
        assert set(failures) == {"study_not_found", "no_frontal_image"}
    stored = [i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.study_instances(study)]
    assert result["sr"]["sop_instance_uid"] in stored

    down = start_server(pacs=PacsSettings(url="http://127.0.0.1:9/dicom-web", retries=1, timeout_s=2))
    with down.client() as c:
        status = wait_job(c, c.post(f"/v1/studies/{study}/report").json()["job_id"])
        assert status["state"] == "failed" and status["error"]["code"] == "pacs_unreachable"

    import json

    # the service's lines (the test's own httpx client logs the URLs it calls: not the service's)
    logs = "\n".join(line for line in log_capture.lines if not json.loads(line)["logger"].startswith(("httpx", "httpcore")))
    assert "saerad.service" in logs
    for secret in (study, pa.SOPInstanceUID, PATIENT_ID, PATIENT_NAME.split("^")[0], PASSWORD):
        assert secret not in logs


def test_a_study_report_queued_at_a_shutdown_runs_after_the_restart(orthanc, start_server, wait_job, tmp_path):
    import threading

    from saerad.service.jobs import JobOutput

    study = generate_uid()
    orthanc.upload(dicom_bytes(make_radiograph(study_uid=study, view="PA")))
    settings = PacsSettings(url=orthanc.dicomweb, username=USER, password=PASSWORD, retries=1)
    db = tmp_path / "jobs.sqlite3"
    first = start_server(pacs=settings, job_db=db, job_workers=1, queue_size=2)
    gate = threading.Event()
    first.state.runner.submit("demo", lambda jid: (gate.wait(20), JobOutput({}))[1])  # the worker is busy
    with first.client() as c:
        job_id = c.post(f"/v1/studies/{study}/report").json()["job_id"]
    threading.Timer(0.3, gate.set).start()
    first.stop()

    second = start_server(pacs=settings, job_db=db)
    with second.client() as c:
        done = wait_job(c, job_id)
    assert done["state"] == "done", done
    assert done["result"]["image"]["sop_instance_uid"]


def test_pacs_settings_come_from_the_environment(monkeypatch):
    from saerad.service.settings import ServiceSettings

    monkeypatch.setenv("SAERAD_PACS_URL", "https://pacs.example:8042/dicom-web/")
    monkeypatch.setenv("SAERAD_PACS_HEADERS", '{"X-Api-Key": "k3y"}')
    monkeypatch.setenv("SAERAD_PACS_TOKEN", "t0ken")
    pacs = ServiceSettings().pacs
    assert pacs.url == "https://pacs.example:8042/dicom-web"
    assert pacs.request_headers() == {"X-Api-Key": "k3y", "Authorization": "Bearer t0ken"}
    assert "k3y" not in repr(pacs) and "t0ken" not in repr(pacs)
