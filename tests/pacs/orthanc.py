"""A real PACS for tests: Orthanc with its DICOMweb plugin, on 127.0.0.1, in a temp folder.

Orthanc comes from the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``scripts/install.sh
test`` installs them when run as root). :func:`running_orthanc` starts one with its own
configuration, storage and free port, HTTP basic authentication on, and stops it on exit (about half
a second to start); it skips the calling test with that message where the packages are missing.

Use from any test folder::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pacs"))   # tests/pacs
    from orthanc import running_orthanc
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")
USER, PASSWORD = "saerad", "orthanc-test-secret"


@dataclass
class Orthanc:
    url: str  # Orthanc REST root
    auth: tuple[str, str]

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, data: bytes) -> str:
        """Store a DICOM file through Orthanc's own REST API (not the code under test)."""
        reply = httpx.post(f"{self.url}/instances", content=data, auth=self.auth, timeout=30)
        reply.raise_for_status()
        return reply.json()["ID"]

    def study_instances(self, study_uid: str) -> list[dict]:
        """Every instance of the study as Orthanc indexes it (expanded, with main DICOM tags)."""
        found = httpx.post(f"{self.url}/tools/find", auth=self.auth, timeout=30, json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True,
        })
        found.raise_for_status()
        return found.json()

    def instance_file(self, orthanc_id: str) -> bytes:
        reply = httpx.get(f"{self.url}/instances/{orthanc_id}/file", auth=self.auth, timeout=30)
        reply.raise_for_status()
        return reply.content


def _find_plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_orthanc(root: Path) -> Iterator[Orthanc]:
    """Orthanc serving DICOMweb from ``root``; skips the test where Orthanc is not installed."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    plugin = _find_plugin()
    if binary is None or plugin is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian packages orthanc and "
                    "orthanc-dicomweb; `bash scripts/install.sh test` installs them when run as root)")
    port = _free_port()
    config = {
        "Name": "saerad-test-pacs",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomServerEnabled": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{port}"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log_path = root / "orthanc.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        server = Orthanc(url=f"http://127.0.0.1:{port}", auth=(USER, PASSWORD))
        try:
            _wait_until_up(server, process, log_path)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_until_up(server: Orthanc, process: subprocess.Popen, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            reply = httpx.get(f"{server.url}/plugins", auth=server.auth, timeout=2)
            if reply.status_code == 200:
                assert "dicom-web" in reply.json(), reply.text
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s")
        time.sleep(0.05)
