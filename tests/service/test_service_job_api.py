"""Jobs over HTTP: localised reports and interventions with a tiny real diffusion model, results that
survive a restart, and 429 + Retry-After when the queue is full."""

from __future__ import annotations

import io
import threading

import pytest

from saerad.report.schema import GroundedReport
from saerad.service.jobs import Artifact, JobOutput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(fixtures_dir):
    path = fixtures_dir / "00000001_000.png"
    return {"file": (path.name, path.read_bytes())}


def test_localized_report_job_survives_a_restart(start_server, fixtures_dir, tmp_path, wait_job):
    db = tmp_path / "persist.sqlite3"
    first = start_server(job_db=db, localize_steps=2)
    with first.client() as c:
        r = c.post("/v1/reports", params={"localize": "true", "format": "fhir"}, files=_png(fixtures_dir))
        assert r.status_code == 202, r.text
        accepted = r.json()
        job_id = accepted["job_id"]
        assert accepted["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{job_id}"
        done = wait_job(c, job_id)
        assert done["state"] == "done", done
    report = GroundedReport.model_validate(done["result"]["report"])
    assert report.findings and done["result"]["fhir"]["resourceType"] == "DiagnosticReport"
    links = done["result"]["heatmaps"]
    assert links and all(link.startswith(f"/v1/jobs/{job_id}/heatmaps/") for link in links)
    localized = [s for s in report.findings if s.heatmap is not None]
    assert localized and all(s.boxes is not None for s in localized)
    first.stop()

    second = start_server(job_db=db)
    with second.client() as c:
        again = c.get(f"/v1/jobs/{job_id}").json()
        assert again["state"] == "done" and again["result"] == done["result"]
        png = c.get(links[0])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(PNG_MAGIC)


@pytest.mark.parametrize("method", ["attribution", "counterfactual"])
def test_localisation_method_and_overlays(client, fixtures_dir, wait_job, method):
    r = client.post("/v1/reports", params={"localize": method, "overlays": "true"}, files=_png(fixtures_dir))
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["job_id"])
    assert done["state"] == "done", done
    report = GroundedReport.model_validate(done["result"]["report"])
    assert report.localization.method == method
    heatmaps, overlays = done["result"]["heatmaps"], done["result"]["overlays"]
    assert heatmaps and len(overlays) == len(heatmaps)
    from PIL import Image

    with Image.open(io.BytesIO(client.get(heatmaps[0]).content)) as heat, \
            Image.open(io.BytesIO(client.get(overlays[0]).content)) as picture:
        assert heat.mode == "L" and picture.mode == "RGB"


def test_intervention_job(client, fixtures_dir, wait_job):
    r = client.post("/v1/interventions", params={"feature": [0, 3], "mode": "add", "strength": 1.5, "steps": 2},
                    files=_png(fixtures_dir))
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["job_id"])
    assert done["state"] == "done", done
    result = done["result"]
    assert [e["feature"] for e in result["edits"]] == [0, 3] and result["mode"] == "add"
    assert result["edits"][0]["description"] == "Small left pleural effusion."
    assert "composition" in result["metrics"]
    links = [result["images"]["original"], result["images"]["reconstruction"]]
    links += [e["counterfactual"] for e in result["edits"]] + [e["heatmap"] for e in result["edits"]]
    for link in links:
        got = client.get(link)
        assert got.status_code == 200 and got.content.startswith(PNG_MAGIC), link


def test_job_finished_in_one_app_is_served_by_the_next(start_server, tmp_path):
    """Persistence without diffusion: a job recorded by one app instance, read over HTTP by another."""
    db = tmp_path / "p2.sqlite3"
    first = start_server(job_db=db)
    job_id = first.state.runner.submit("demo", lambda jid: JobOutput({"n": 1}, [Artifact("heatmaps/0", PNG_MAGIC)]))
    first.stop()
    second = start_server(job_db=db)
    with second.client() as c:
        body = c.get(f"/v1/jobs/{job_id}").json()
        assert body["state"] == "done" and body["result"] == {"n": 1}
        assert c.get(f"/v1/jobs/{job_id}/heatmaps/0.png").content == PNG_MAGIC


def test_queue_full_is_429_with_retry_after(start_server, fixtures_dir):
    live = start_server(queue_size=0, job_workers=1)
    gate, started = threading.Event(), threading.Event()

    def blocker(job_id):
        started.set()
        gate.wait(30)
        return JobOutput({})

    live.state.runner.submit("blocker", blocker)
    assert started.wait(10)
    try:
        with live.client() as c:
            for path, params in (("/v1/reports", {"localize": "true"}), ("/v1/interventions", {"feature": 0})):
                r = c.post(path, params=params, files=_png(fixtures_dir))
                assert r.status_code == 429, r.text
                assert r.json()["error"]["code"] == "queue_full"
                assert int(r.headers["retry-after"]) >= 1
            assert c.post("/v1/reports", files=_png(fixtures_dir)).status_code == 200  # reports are not jobs
    finally:
        gate.set()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_job_status_while_running_has_no_result(start_server, fixtures_dir, fmt, wait_job):
    live = start_server(job_workers=1, localize_steps=2)
    gate = threading.Event()
    live.state.runner.submit("blocker", lambda jid: (gate.wait(30), JobOutput({}))[1])
    try:
        with live.client() as c:
            r = c.post("/v1/reports", params={"localize": "true", "format": fmt}, files=_png(fixtures_dir))
            job_id = r.json()["job_id"]
            body = c.get(f"/v1/jobs/{job_id}").json()
            assert body["state"] == "queued" and body["result"] is None and body["error"] is None
            assert c.get(f"/v1/jobs/{job_id}/heatmaps/0.png").status_code == 404
            gate.set()
            done = wait_job(c, job_id)
            assert done["state"] == "done"
            assert ("text" in done["result"]) == (fmt == "text")
    finally:
        gate.set()


def test_a_job_queued_when_the_server_stops_runs_after_the_restart(start_server, fixtures_dir, tmp_path, wait_job):
    db = tmp_path / "restart.sqlite3"
    first = start_server(job_db=db, job_workers=1, queue_size=2, localize_steps=2)
    gate = threading.Event()
    first.state.runner.submit("demo", lambda jid: (gate.wait(20), JobOutput({}))[1])  # keeps the worker busy
    with first.client() as c:
        r = c.post("/v1/reports", params={"localize": "true"}, files=_png(fixtures_dir))
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
    threading.Timer(0.3, gate.set).start()
    first.stop()  # the queued job and its stored input stay in the database

    second = start_server(job_db=db)
    with second.client() as c:
        done = wait_job(c, job_id)
    assert done["state"] == "done", done
    report = GroundedReport.model_validate(done["result"]["report"])
    assert report.image is not None and report.image.source_format == "png"
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0] == 0  # deleted once finished


def test_without_stored_inputs_a_restart_fails_the_job_clearly(start_server, fixtures_dir, tmp_path, wait_job):
    db = tmp_path / "memory-only.sqlite3"
    first = start_server(job_db=db, job_workers=1, queue_size=2, job_keep_inputs=False)
    gate = threading.Event()
    first.state.runner.submit("demo", lambda jid: (gate.wait(20), JobOutput({}))[1])
    with first.client() as c:
        job_id = c.post("/v1/reports", params={"localize": "true"}, files=_png(fixtures_dir)).json()["job_id"]
    threading.Timer(0.3, gate.set).start()
    first.stop()
    second = start_server(job_db=db)
    with second.client() as c:
        body = c.get(f"/v1/jobs/{job_id}").json()
    assert body["state"] == "failed" and body["error"]["code"] == "interrupted"
