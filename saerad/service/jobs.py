"""Slow work (localisation, interventions) as jobs: a SQLite store plus a bounded worker pool.

Why SQLite (stdlib, WAL): finished results must survive a restart and be readable by every worker
process or replica that shares the file, without another server to run. Derived results (report
JSON, PNG maps) expire after ``ttl_s``. A job's input (its decoded pixels and options, never the
uploaded file; see :mod:`saerad.service.tasks`) is kept beside it only while it is unfinished, so that a job
whose process died runs again: the next process on the same host (or with the same replica id)
queues it again, at most :data:`MAX_RESUMES` times. A job without a stored input (the operator
turned that off), one resumed too often, or one older than ``stale_s`` is marked ``failed`` (code
``interrupted``) instead of staying ``running`` forever.

Why a counter instead of ``queue.Queue(maxsize)``: the limit must be checked *before* a job row is
created and the upload accepted, so a full queue answers 429 at once, with a ``Retry-After`` computed
from the measured job duration.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from saerad.errors import SaeradError
from saerad.service.errors import QueueFullError

log = logging.getLogger("saerad.service.jobs")

JobState = Literal["queued", "running", "done", "failed"]
FINISHED = ("done", "failed")
_SCHEMA_VERSION = 1  # job_inputs was added without changing it: older code ignores the table
#: How many times an interrupted job is queued again before it is failed (a job that kills its
#: process must not take every restart down with it).
MAX_RESUMES = 2


@dataclass(frozen=True)
class JobInput:
    """What a job needs to run again after a restart: options (JSON) and an opaque payload."""

    params: dict[str, Any]
    data: bytes


@dataclass(frozen=True)
class Artifact:
    """A file produced by a job (e.g. a heatmap PNG), served at ``/v1/jobs/{id}/{name}.png``."""

    name: str  # "heatmaps/0", "images/original", ...
    data: bytes
    media_type: str = "image/png"


@dataclass
class JobOutput:
    result: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass
class JobRecord:
    id: str
    kind: str
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any] | None
    error: dict[str, str] | None
    artifacts: list[str]


def _owner_tag(replica: str | None) -> str:
    host = (replica or socket.gethostname()).replace(":", "_")
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """Job rows and their artifacts in one SQLite file; one connection per thread."""

    def __init__(self, path: str | os.PathLike[str], *, replica_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.replica_id = replica_id
        self.owner = _owner_tag(replica_id)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # executescript() commits by itself, so the DDL runs outside _tx (it is idempotent).
        self._conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                state TEXT NOT NULL,
                owner TEXT NOT NULL,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL,
                result TEXT,
                error_code TEXT,
                error_message TEXT
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, finished_at);
            CREATE TABLE IF NOT EXISTS job_inputs (
                job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
                params TEXT NOT NULL,
                data BLOB NOT NULL,
                resumes INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE IF NOT EXISTS artifacts (
                job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                media_type TEXT NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (job_id, name)
            );
            """
        )
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise SaeradError(f"job database {self.path} has schema version {version}, "
                                  f"expected {_SCHEMA_VERSION}", code="invalid_job_db")

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type: object, *_: object) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> JobStore._Tx:
        return JobStore._Tx(self._conn())

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # created in another, finished thread
                    pass
            self._conns.clear()
        self._local = threading.local()

    # -- writes -----------------------------------------------------------------------------
    def create(self, kind: str, job_input: JobInput | None = None) -> str:
        """A new queued job; with ``job_input``, one a restart can run again."""
        # Unguessable: the id is what lets a client read the result. The replica prefix lets a load
        # balancer route /v1/jobs/<replica>-... back to the replica that owns the job database.
        job_id = uuid.uuid4().hex if self.replica_id is None else f"{self.replica_id}-{uuid.uuid4().hex}"
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, state, owner, created_at) VALUES (?, ?, 'queued', ?, ?)",
                (job_id, kind, self.owner, time.time()),
            )
            if job_input is not None:
                db.execute("INSERT INTO job_inputs (job_id, params, data) VALUES (?, ?, ?)",
                           (job_id, json.dumps(job_input.params), job_input.data))
        return job_id

    def mark_running(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='running', started_at=? WHERE id=?", (time.time(), job_id))

    def finish(self, job_id: str, output: JobOutput) -> None:
        with self._tx() as db:
            for art in output.artifacts:
                db.execute(
                    "INSERT OR REPLACE INTO artifacts (job_id, name, media_type, data) VALUES (?, ?, ?, ?)",
                    (job_id, art.name, art.media_type, art.data),
                )
            db.execute(
                "UPDATE jobs SET state='done', finished_at=?, result=? WHERE id=?",
                (time.time(), json.dumps(output.result), job_id),
            )
            db.execute("DELETE FROM job_inputs WHERE job_id=?", (job_id,))

    def fail(self, job_id: str, code: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state='failed', finished_at=?, error_code=?, error_message=? WHERE id=?",
                (time.time(), code, message, job_id),
            )
            db.execute("DELETE FROM job_inputs WHERE job_id=?", (job_id,))

    def recover(self, stale_s: float = 6 * 3600.0) -> int:
        """Take over unfinished jobs whose process is gone; returns how many (queued again or failed).

        Gone means: same host (or replica id) and the pid is dead or is ours (a restarted container
        reuses pid 1), or, for any owner, created more than ``stale_s`` seconds ago. A gone job with
        a stored input, resumed fewer than :data:`MAX_RESUMES` times and not stale, is queued again
        under this store's owner (:meth:`resumable` lists them); any other is failed.
        """
        host, pid, _ = self.owner.split(":")
        cutoff = time.time() - stale_s
        n = 0
        with self._tx() as db:
            rows = db.execute(
                "SELECT jobs.id, jobs.owner, jobs.created_at, job_inputs.resumes FROM jobs "
                "LEFT JOIN job_inputs ON job_inputs.job_id = jobs.id WHERE jobs.state IN ('queued', 'running')"
            ).fetchall()
            for job_id, owner, created_at, resumes in rows:
                if owner == self.owner:
                    continue
                o_host, o_pid, _ = (owner.split(":") + ["", "", ""])[:3]
                same_host_dead = o_host == host and (
                    o_pid == pid or not o_pid.isdigit() or not _pid_alive(int(o_pid))
                )
                stale = created_at < cutoff
                if not (same_host_dead or stale):
                    continue
                n += 1
                if resumes is not None and resumes < MAX_RESUMES and not stale:
                    db.execute("UPDATE jobs SET state='queued', owner=?, started_at=NULL WHERE id=?",
                               (self.owner, job_id))
                    db.execute("UPDATE job_inputs SET resumes=resumes+1 WHERE job_id=?", (job_id,))
                    continue
                why = ("it was interrupted too often" if resumes is not None and not stale
                       else "the server restarted before the job finished")
                db.execute(
                    "UPDATE jobs SET state='failed', finished_at=?, error_code='interrupted', "
                    "error_message=? WHERE id=?",
                    (time.time(), f"{why}; submit it again", job_id),
                )
                db.execute("DELETE FROM job_inputs WHERE job_id=?", (job_id,))
        return n

    def resumable(self) -> list[tuple[str, str, JobInput]]:
        """``(job_id, kind, input)`` of this store's queued jobs that have a stored input, oldest first."""
        rows = self._conn().execute(
            "SELECT jobs.id, jobs.kind, job_inputs.params, job_inputs.data FROM jobs "
            "JOIN job_inputs ON job_inputs.job_id = jobs.id WHERE jobs.state='queued' AND jobs.owner=? "
            "ORDER BY jobs.created_at",
            (self.owner,),
        ).fetchall()
        return [(job_id, kind, JobInput(json.loads(params), bytes(data))) for job_id, kind, params, data in rows]

    def has_input(self, job_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM job_inputs WHERE job_id=?", (job_id,)).fetchone() is not None

    def purge(self, ttl_s: float) -> int:
        """Delete finished jobs (and their artifacts) older than ``ttl_s`` seconds."""
        cutoff = time.time() - ttl_s
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE state IN ('done', 'failed') AND finished_at < ?", (cutoff,)
            )]
            for job_id in ids:
                db.execute("DELETE FROM artifacts WHERE job_id=?", (job_id,))
                db.execute("DELETE FROM job_inputs WHERE job_id=?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        return len(ids)

    # -- reads ------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        db = self._conn()
        row = db.execute(
            "SELECT id, kind, state, created_at, started_at, finished_at, result, error_code, error_message "
            "FROM jobs WHERE id=?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        names = [r[0] for r in db.execute("SELECT name FROM artifacts WHERE job_id=? ORDER BY name", (job_id,))]
        return JobRecord(
            id=row[0],
            kind=row[1],
            state=row[2],
            created_at=row[3],
            started_at=row[4],
            finished_at=row[5],
            result=json.loads(row[6]) if row[6] else None,
            error={"code": row[7], "message": row[8]} if row[7] else None,
            artifacts=names,
        )

    def artifact(self, job_id: str, name: str) -> Artifact | None:
        row = self._conn().execute(
            "SELECT media_type, data FROM artifacts WHERE job_id=? AND name=?", (job_id, name)
        ).fetchone()
        return None if row is None else Artifact(name=name, data=bytes(row[1]), media_type=row[0])


JobFn = Callable[[str], JobOutput]
#: Rebuilds a job's work from its kind and stored input (after a restart).
ResumeFn = Callable[[str, JobInput], JobFn]


class JobRunner:
    """``workers`` threads running jobs; at most ``queue_size`` jobs wait beyond the running ones.

    With ``resume``, jobs an earlier process left unfinished (see :meth:`JobStore.recover`) are
    rebuilt from their stored inputs and queued first, beyond ``queue_size``: they were accepted.
    """

    def __init__(self, store: JobStore, *, workers: int = 1, queue_size: int = 8, ttl_s: float = 86400.0,
                 stale_s: float = 6 * 3600.0, resume: ResumeFn | None = None):
        self.store = store
        self.workers = workers
        self.queue_size = queue_size
        self.ttl_s = ttl_s
        self._queue: queue.Queue[tuple[str, JobFn] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._mean_s = 30.0  # prior for Retry-After until a job has been measured
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"saerad-job-{i}", daemon=True) for i in range(workers)
        ]
        recovered = store.recover(stale_s)
        resumed = self._resume_all(resume)
        purged = store.purge(ttl_s)
        if recovered or purged:
            log.info("job store: %d interrupted job(s) taken over (%d queued again), %d expired job(s) deleted",
                     recovered, resumed, purged)
        for t in self._threads:
            t.start()

    def _resume_all(self, resume: ResumeFn | None) -> int:
        n = 0
        for job_id, kind, job_input in self.store.resumable():
            try:
                if resume is None:
                    raise SaeradError("this server cannot run the job again", code="interrupted")
                fn = resume(kind, job_input)
            except SaeradError as exc:
                self._safe_fail(job_id, "interrupted", f"{exc.message}; submit it again")
                continue
            except Exception:
                log.exception("job %s could not be resumed", job_id)
                self._safe_fail(job_id, "interrupted", "the job could not be resumed; submit it again")
                continue
            with self._lock:
                self._waiting += 1
            self._queue.put((job_id, fn))
            log.info("job queued again after a restart", extra={"job_id": job_id, "job_kind": kind})
            n += 1
        return n

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: mean job time x jobs ahead / workers."""
        ahead = self._waiting + self._running
        return int(min(3600, max(1, math.ceil(self._mean_s * max(ahead, 1) / self.workers))))

    def _raise_if_full(self) -> None:
        # Caller holds self._lock.
        if self._closed:
            raise QueueFullError("the server is shutting down", headers={"Retry-After": "5"})
        free_workers = max(0, self.workers - self._running)
        if self._waiting >= self.queue_size + free_workers:
            raise QueueFullError(
                f"job queue is full ({self._waiting} waiting, {self._running} running); retry later",
                headers={"Retry-After": str(self.retry_after_s())},
            )

    def check_capacity(self) -> None:
        """Raise :class:`QueueFullError` now if a job submitted now would be refused."""
        with self._lock:
            self._raise_if_full()

    def submit(self, kind: str, fn: JobFn, *, job_input: JobInput | None = None) -> str:
        """Queue ``fn(job_id)``; it runs in the caller's context (request id in its log lines).

        ``job_input`` is stored with the job, so that a restart can run it again (``resume``).
        """
        with self._lock:
            self._raise_if_full()
            self._waiting += 1
        try:
            job_id = self.store.create(kind, job_input)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        ctx = contextvars.copy_context()
        self._queue.put((job_id, lambda jid: ctx.run(fn, jid)))
        log.info("job queued", extra={"job_id": job_id, "job_kind": kind})
        return job_id

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, fn = item
            with self._lock:
                self._waiting -= 1
                self._running += 1
            t0 = time.perf_counter()
            try:
                self.store.mark_running(job_id)
                output = fn(job_id)
                self.store.finish(job_id, output)
            except SaeradError as exc:
                log.info("job %s failed: %s", job_id, exc.code)
                self._safe_fail(job_id, exc.code, exc.message)
            except Exception:
                log.exception("job %s crashed", job_id)
                self._safe_fail(job_id, "internal_error", "the job failed on the server; see its log")
            finally:
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self._running -= 1
                    self._mean_s = 0.7 * self._mean_s + 0.3 * elapsed
            try:
                self.store.purge(self.ttl_s)
            except sqlite3.Error:
                log.warning("could not purge expired jobs", exc_info=True)

    def _has_input(self, job_id: str) -> bool:
        try:
            return self.store.has_input(job_id)
        except sqlite3.Error:
            return False

    def _safe_fail(self, job_id: str, code: str, message: str) -> None:
        try:
            self.store.fail(job_id, code, message)
        except sqlite3.Error:
            log.exception("could not record the failure of job %s", job_id)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking jobs, give running ones ``timeout`` seconds. Waiting jobs with a stored input
        stay queued for the next start; the others fail."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                with self._lock:
                    self._waiting -= 1
                if not self._has_input(item[0]):
                    self._safe_fail(item[0], "interrupted", "the server shut down before the job started")
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
