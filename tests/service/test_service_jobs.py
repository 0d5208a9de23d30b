"""Job store and runner mechanics (no HTTP): persistence, recovery, bounded queue, expiry."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from saerad.errors import SaeradError
from saerad.service.errors import QueueFullError
from saerad.service.jobs import Artifact, JobOutput, JobRunner, JobStore


def _wait(store: JobStore, job_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = store.get(job_id)
        if rec is not None and rec.state in ("done", "failed"):
            return rec
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def test_finished_job_survives_a_new_store(tmp_path):
    db = tmp_path / "jobs.sqlite3"
    store = JobStore(db)
    runner = JobRunner(store, workers=1, queue_size=2)
    job_id = runner.submit("demo", lambda jid: JobOutput({"answer": 42, "id": jid}, [Artifact("heatmaps/0", b"png")]))
    rec = _wait(store, job_id)
    runner.close()
    store.close()

    again = JobStore(db)
    rec = again.get(job_id)
    assert rec is not None and rec.state == "done"
    assert rec.result == {"answer": 42, "id": job_id}
    assert rec.artifacts == ["heatmaps/0"]
    assert again.artifact(job_id, "heatmaps/0").data == b"png"
    assert again.artifact(job_id, "heatmaps/1") is None
    assert again.get("nope") is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_errors_become_failed_jobs_with_codes(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    runner = JobRunner(store, workers=1, queue_size=4)

    def user_error(jid):
        raise SaeradError("the image shows nothing to localise", code="nothing_to_do")

    def crash(jid):
        raise RuntimeError("secret internal detail")

    a = _wait(store, runner.submit("demo", user_error))
    b = _wait(store, runner.submit("demo", crash))
    assert a.state == "failed" and a.error == {"code": "nothing_to_do", "message": "the image shows nothing to localise"}
    assert b.state == "failed" and b.error["code"] == "internal_error"
    assert "secret" not in b.error["message"]
    runner.close()


def test_queue_bound_and_retry_after(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    runner = JobRunner(store, workers=1, queue_size=1)
    gate = threading.Event()
    started = threading.Event()

    def blocker(jid):
        started.set()
        gate.wait(10)
        return JobOutput({})

    first = runner.submit("demo", blocker)
    assert started.wait(5)
    second = runner.submit("demo", blocker)  # waits: queue_size=1
    with pytest.raises(QueueFullError) as info:
        runner.submit("demo", blocker)
    assert info.value.http_status == 429
    assert int(info.value.headers["Retry-After"]) >= 1
    with pytest.raises(QueueFullError):
        runner.check_capacity()
    gate.set()
    assert _wait(store, first).state == "done"
    assert _wait(store, second).state == "done"
    runner.check_capacity()  # room again
    runner.close()


def test_unfinished_jobs_of_a_dead_process_are_marked_interrupted(tmp_path):
    db = tmp_path / "j.sqlite3"
    old = JobStore(db)
    job_id = old.create("demo")
    old.mark_running(job_id)
    old.close()
    # A later process on this host (same pid here, different owner tag) recovers it.
    new = JobStore(db)
    assert new.recover() == 1
    rec = new.get(job_id)
    assert rec.state == "failed" and rec.error["code"] == "interrupted"
    # Jobs of another host are left alone: only that host knows whether they still run.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO jobs (id, kind, state, owner, created_at) VALUES ('x', 'demo', 'running', 'elsewhere:1:abc', ?)",
            (time.time(),),
        )
    assert new.recover() == 0
    assert new.get("x").state == "running"
    # ... unless they are older than the staleness limit.
    assert new.recover(stale_s=1e-6) == 1
    assert new.get("x").error["code"] == "interrupted"


def test_replica_id_prefixes_job_ids(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3", replica_id="r2")
    job_id = store.create("demo")
    assert job_id.startswith("r2-") and store.get(job_id).state == "queued"


def test_purge_deletes_expired_jobs_and_their_artifacts(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    job_id = store.create("demo")
    store.finish(job_id, JobOutput({"ok": True}, [Artifact("heatmaps/0", b"x")]))
    assert store.purge(ttl_s=3600) == 0
    time.sleep(0.02)
    assert store.purge(ttl_s=0.01) == 1
    assert store.get(job_id) is None and store.artifact(job_id, "heatmaps/0") is None


def test_close_fails_waiting_jobs(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    runner = JobRunner(store, workers=1, queue_size=3)
    gate = threading.Event()
    running = runner.submit("demo", lambda jid: (gate.wait(10), JobOutput({}))[1])
    waiting = runner.submit("demo", lambda jid: JobOutput({}))
    time.sleep(0.05)
    threading.Timer(0.2, gate.set).start()
    runner.close(timeout=5)
    assert store.get(waiting).state == "failed" and store.get(waiting).error["code"] == "interrupted"
    assert store.get(running).state == "done"
    with pytest.raises(QueueFullError):
        runner.submit("demo", lambda jid: JobOutput({}))


# ------------------------------------------------------------------------ resuming after a restart


def _as_dead_process(db, job_id: str) -> None:
    """Give ``job_id`` to a process of this host that no longer exists."""
    import socket

    dead_pid = 2**22 + 12345  # above Linux's default pid_max
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET owner=?, state='running' WHERE id=?",
                     (f"{socket.gethostname()}:{dead_pid}:gone", job_id))


def test_an_interrupted_job_with_its_input_runs_again_and_its_input_is_then_deleted(tmp_path):
    from saerad.service.jobs import JobInput

    db = tmp_path / "j.sqlite3"
    old = JobStore(db)
    job_id = old.create("echo", JobInput({"n": 7}, b"payload"))
    old.close()
    _as_dead_process(db, job_id)

    store = JobStore(db)
    seen = []

    def resume(kind, stored):
        seen.append((kind, stored.params, stored.data))
        return lambda jid: JobOutput({"n": stored.params["n"], "id": jid})

    runner = JobRunner(store, resume=resume)
    rec = _wait(store, job_id)
    runner.close()
    assert seen == [("echo", {"n": 7}, b"payload")]
    assert rec.state == "done" and rec.result == {"n": 7, "id": job_id}
    assert not store.has_input(job_id)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0] == 0


def test_a_job_interrupted_too_often_fails_instead_of_looping(tmp_path):
    from saerad.service.jobs import MAX_RESUMES, JobInput

    db = tmp_path / "j.sqlite3"
    job_id = JobStore(db).create("echo", JobInput({}, b"x"))
    for _ in range(MAX_RESUMES):
        _as_dead_process(db, job_id)
        store = JobStore(db)
        assert store.recover() == 1 and store.get(job_id).state == "queued"
    _as_dead_process(db, job_id)
    store = JobStore(db)
    assert store.recover() == 1
    rec = store.get(job_id)
    assert rec.state == "failed" and rec.error["code"] == "interrupted" and "too often" in rec.error["message"]
    assert not store.has_input(job_id)


def test_a_job_that_cannot_be_rebuilt_fails_clearly(tmp_path):
    from saerad.service.jobs import JobInput

    db = tmp_path / "j.sqlite3"
    job_id = JobStore(db).create("retired-kind", JobInput({}, b"x"))
    _as_dead_process(db, job_id)
    store = JobStore(db)

    def resume(kind, stored):
        raise SaeradError(f"unknown job kind {kind!r}", code="interrupted")

    JobRunner(store, resume=resume).close()
    rec = store.get(job_id)
    assert rec.state == "failed" and "unknown job kind" in rec.error["message"]


def test_shutdown_keeps_waiting_jobs_with_inputs_for_the_next_start(tmp_path):
    from saerad.service.jobs import JobInput

    db = tmp_path / "j.sqlite3"
    store = JobStore(db)
    runner = JobRunner(store, workers=1, queue_size=3)
    gate = threading.Event()
    runner.submit("demo", lambda jid: (gate.wait(10), JobOutput({}))[1])
    kept = runner.submit("echo", lambda jid: JobOutput({"first": True}), job_input=JobInput({"n": 1}, b"x"))
    time.sleep(0.05)
    threading.Timer(0.2, gate.set).start()
    runner.close(timeout=5)
    store.close()
    assert JobStore(db).get(kept).state == "queued"

    again = JobStore(db)
    runner = JobRunner(again, resume=lambda kind, stored: lambda jid: JobOutput({"resumed": stored.params["n"]}))
    assert _wait(again, kept).result == {"resumed": 1}
    runner.close()


def test_stored_pixels_round_trip(tmp_path):
    from saerad.imaging import XRay
    from saerad.service.tasks import job_input, restore_xray

    rng = np.random.default_rng(0)
    eight_bit = rng.integers(0, 256, (37, 53)).astype(np.float32) / np.float32(255.0)
    deep = rng.random((20, 30), dtype=np.float32)
    for pixels in (eight_bit, deep):
        xray = XRay(pixels=pixels, original_size=pixels.shape, source_format="png")
        stored = job_input(xray, {"steps": 3})
        back = restore_xray(stored)
        assert stored.params["options"] == {"steps": 3}
        assert back.original_size == xray.original_size and back.source_format == "png"
        if pixels is eight_bit:
            np.testing.assert_array_equal(back.pixels, pixels)  # exact for 8-bit sources
        else:  # deeper sources: the 8 bits the encoder sees anyway
            np.testing.assert_allclose(back.pixels, pixels, atol=0.5 / 255 + 1e-7)


def test_a_dicom_header_is_stored_only_for_outputs_that_reference_the_study(fixtures_dir):
    from saerad.imaging import load_xray
    from saerad.service.tasks import job_input, restore_xray

    xray = load_xray(fixtures_dir / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    assert xray.dicom is not None
    plain = job_input(xray, {"fmt": "json"})
    assert "dicom_header" not in plain.params["image"] and restore_xray(plain).dicom is None
    sr = restore_xray(job_input(xray, {"fmt": "dicom-sr"}))
    assert sr.dicom.StudyInstanceUID == xray.dicom.StudyInstanceUID and "PixelData" not in sr.dicom
    np.testing.assert_array_equal(sr.pixels, restore_xray(plain).pixels)
