"""Fixtures of the service tests: a tiny real bundle, live uvicorn servers, captured logs.

Servers are real: ``uvicorn.Server`` on a socket bound to 127.0.0.1:0 in a background thread, called
over HTTP with httpx. The bundle comes from the report tests' builders (``tests/report``), so the
service runs the true Reporter on a random 1-layer Dinov2 + 16-feature SAE, not a fake.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_builders import build_tiny_bundle  # noqa: E402

from saerad.service.logs import JsonFormatter, RequestIdFilter  # noqa: E402

TINY_DIFFUSION_RESOLUTION = 32


class LiveServer:
    """One app served by uvicorn in a thread; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 60.0, wait_ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        while wait_ready and time.monotonic() < deadline:
            if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        return self

    @property
    def state(self) -> Any:
        return self.app.state.saerad

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class LogCapture(logging.Handler):
    """Every log record of the process, formatted as the service formats them (JSON)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock_lines:
            self.lines.append(line)

    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)


@pytest.fixture(scope="session")
def tiny_diffusion_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny TokenConditionedUNet saved like a trained one."""
    from report_builders import D_IN

    from saerad.diffusion.model import TokenConditionedUNet, save_diffusion

    model = TokenConditionedUNet.from_architecture("tiny", token_dim=D_IN, resolution=TINY_DIFFUSION_RESOLUTION)
    return save_diffusion(model, tmp_path_factory.mktemp("diffusion") / "model", metadata={"test": True})


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_diffusion_dir) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("svc-bundle") / "bundle", diffusion_dir=tiny_diffusion_dir)


@pytest.fixture(scope="session")
def tiny_bundle_no_diffusion(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("svc-bundle-nd") / "bundle")


@pytest.fixture(scope="session")
def reporter(tiny_bundle):
    from saerad.pipeline import Reporter

    return Reporter.from_bundle(tiny_bundle)


@pytest.fixture(scope="session")
def log_capture() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def start_server(tmp_path, reporter, log_capture):
    """Factory: ``start_server(reporter=..., **settings)`` -> a started LiveServer, stopped at teardown."""
    from saerad.service.app import create_app
    from saerad.service.settings import ServiceSettings

    servers: list[LiveServer] = []

    def start(*, use_reporter: Any = reporter, wait_ready: bool = True, **overrides: Any) -> LiveServer:
        values: dict[str, Any] = {"job_db": tmp_path / "jobs.sqlite3", "log_level": "DEBUG", "warmup": True}
        values.update(overrides)
        app = create_app(ServiceSettings(**values), reporter=use_reporter)
        server = LiveServer(app).start(wait_ready=wait_ready)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bundle, log_capture) -> Iterator[LiveServer]:
    """A server that loads the tiny bundle itself (the production lifespan path), 1 MiB upload limit."""
    from saerad.service.app import create_app
    from saerad.service.settings import ServiceSettings

    settings = ServiceSettings(
        bundle=str(tiny_bundle),
        job_db=tmp_path_factory.mktemp("jobs") / "jobs.sqlite3",
        max_upload_bytes=1024 * 1024,
        log_level="DEBUG",
        localize_steps=3,
        intervention_steps=3,
    )
    live = LiveServer(create_app(settings)).start()
    yield live
    live.stop()


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def wait_job():
    """``wait_job(client, job_id)`` -> the job's final status body (polls until done or failed)."""
    return _wait_for_job


def _wait_for_job(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
