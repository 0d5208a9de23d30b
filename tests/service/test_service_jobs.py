"""Job store and runner mechanics (no HTTP): persistence, recovery, bounded queue, expiry."""

from __future__ import annotations

import sqlite3
import threading
import time

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
