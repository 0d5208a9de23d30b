"""DICOM patient tags never appear in responses or logs; log lines carry only whitelisted fields.

The identifying values are read from the fixture files at run time (nothing from the shared data is
copied into the repository).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

ALLOWED_LOG_KEYS = {"ts", "level", "logger", "msg", "request_id", "exc", "method", "path", "status", "duration_ms",
                    "bytes_in", "bytes_out", "job_id", "job_kind", "client"}
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber",
                    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName",
                    "ReferringPhysicianName", "StudyID")


def identifying_values(paths: list[Path]) -> set[str]:
    import pydicom

    values: set[str] = set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in IDENTIFYING_TAGS:
            value = str(ds.get(tag, "") or "").strip()
            if len(value) >= 6:  # short values ("M", "62") would match by accident
                values.add(value)
    return values


def test_dicom_patient_tags_never_reach_responses_or_logs(client, fixtures_dir, log_capture, wait_job):
    dicoms = sorted(fixtures_dir.glob("*.dcm"))
    secrets = identifying_values(dicoms)
    assert secrets, "the fixture DICOMs carry patient tags"
    start = len(log_capture.lines)
    seen: list[str] = []

    def record(r):
        seen.append(r.text if not r.headers.get("content-type", "").startswith("image/") else "")
        seen.append(json.dumps(dict(r.headers)))
        return r

    for path in dicoms:
        data = path.read_bytes()
        for fmt in ("json", "text", "fhir"):
            r = record(client.post("/v1/reports", params={"format": fmt}, files={"file": (path.name, data)}))
            assert r.status_code == 200
        job = record(client.post("/v1/reports", params={"localize": "true"}, files={"file": (path.name, data)}))
        done = wait_job(client, job.json()["job_id"])
        seen.append(json.dumps(done))
        for link in done["result"]["heatmaps"][:1]:
            record(client.get(link))
        iv = record(client.post("/v1/interventions", params={"feature": 2, "steps": 2},
                                files={"file": (path.name, data)}))
        seen.append(json.dumps(wait_job(client, iv.json()["job_id"])))
        # An error path must not echo tags either: the same file without its pixels.
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data))
        del ds.PixelData
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        bad = record(client.post("/v1/reports", files={"file": (path.name, buf.getvalue())}))
        assert 400 <= bad.status_code < 500

    responses = "\n".join(seen)
    logs = "\n".join(log_capture.lines[start:])
    assert "saerad.service.access" in logs
    for secret in secrets:
        assert secret not in responses, "a DICOM identifier was echoed in a response"
        assert secret not in logs, "a DICOM identifier was written to the log"


def test_service_log_lines_hold_only_whitelisted_fields(client, fixtures_dir, log_capture):
    start = len(log_capture.lines)
    png = fixtures_dir / "00000001_000.png"
    client.post("/v1/reports", files={"file": (png.name, png.read_bytes())})
    client.post("/v1/reports", files={"file": ("x.txt", b"Heart size is normal.")})
    lines = [json.loads(line) for line in log_capture.lines[start:]]
    service = [entry for entry in lines if entry["logger"].startswith("saerad.service")]
    assert service
    for entry in service:
        assert set(entry) <= ALLOWED_LOG_KEYS, entry
        assert len(json.dumps(entry)) < 2000  # no pixel arrays or report bodies
        assert "Heart size" not in entry["msg"]


@pytest.mark.parametrize("fmt", ["json", "fhir"])
def test_reports_do_not_carry_upload_file_names(client, fixtures_dir, fmt):
    dcm = sorted(fixtures_dir.glob("*.dcm"))[0]
    r = client.post("/v1/reports", params={"format": fmt}, files={"file": ("Doe_Jane_1970.dcm", dcm.read_bytes())})
    assert r.status_code == 200 and "Doe_Jane" not in r.text
