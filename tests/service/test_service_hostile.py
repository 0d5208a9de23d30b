"""Hostile clients against the real server: no 5xx, bounded memory and time, honest bodies."""

from __future__ import annotations

import base64
import io
import socket
import time

import numpy as np
import pytest
from PIL import Image

from saerad.report.schema import NOTHING_VALIDATED


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _xray_like() -> bytes:
    yy, xx = np.mgrid[0:96, 0:80].astype(np.float32)
    return _png((127 + 100 * np.sin(xx / 9) * np.cos(yy / 13)).astype(np.uint8))


def _raw_request(url: str, head: bytes, body: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``head`` + ``body`` on a raw socket, then read until the server closes (or ``wait_s``)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks), time.monotonic() - t0


# ------------------------------------------------------------------------------------------ FHIR


@pytest.mark.parametrize("request_id", ["gateway_trace:42", "a_b_c", "x:y:z", "__", "a.b-c_d:e"])
def test_fhir_with_any_allowed_request_id_is_valid_fhir(client, request_id):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    r = client.post("/v1/reports", params={"format": "fhir"}, headers={"X-Request-ID": request_id},
                    files={"file": ("x.png", _xray_like())})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["x-request-id"] == request_id  # the trace id itself is kept
    resource = r.json()
    DiagnosticReport.model_validate(resource)
    assert set(resource["id"]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


# ------------------------------------------------------------------------------ honest text bodies


def test_text_and_fhir_say_so_when_nothing_is_written(client):
    png = _xray_like()
    text = client.post("/v1/reports", params={"format": "text", "threshold": 1e9}, files={"file": ("x.png", png)})
    assert text.status_code == 200
    assert text.text.strip() and NOTHING_VALIDATED in text.text
    fhir = client.post("/v1/reports", params={"format": "fhir", "threshold": 1e9}, files={"file": ("x.png", png)})
    data = fhir.json()["presentedForm"][0]["data"]
    assert data and NOTHING_VALIDATED in base64.b64decode(data).decode("utf-8")


# --------------------------------------------------------------------------- shapes and memory


def test_elongated_images_within_the_limits_cost_bounded_memory(client, peak_memory):
    strip = np.full((100, 24_000), 128, np.uint8)
    strip[:, ::50] = 255
    data = _png(strip)
    assert len(data) < 20_000
    with peak_memory() as peak:
        r = client.post("/v1/reports", files={"file": ("strip.png", data)})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["image"] == {"height": 100, "width": 24_000, "source_format": "png"}
    assert peak.added_mb < 500, f"+{peak.added_mb:.0f} MB"


def test_a_side_beyond_the_limit_is_413_not_500(client):
    buf = io.BytesIO()
    Image.new("L", (60_000_000, 1), 0).save(buf, format="PNG")  # 58 KB
    r = client.post("/v1/reports", files={"file": ("line.png", buf.getvalue())})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


# ------------------------------------------------------------------------------- stalled uploads


def test_a_stalled_upload_gets_408_and_its_connection_closed(start_server):
    server = start_server(upload_idle_timeout_s=0.5, upload_timeout_s=5.0)
    boundary = "hostile"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()[:70]
    head = (f"POST /v1/reports HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    reply, seconds = _raw_request(server.url, head, body, wait_s=10.0)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"request_timeout"' in reply and b"70 of 100000 bytes" in reply
    assert seconds < 5.0  # answered at the idle timeout, and the server closed the socket


def test_a_trickling_upload_hits_the_total_deadline(start_server):
    server = start_server(upload_idle_timeout_s=1.0, upload_timeout_s=1.5)
    host, port = server.url.removeprefix("http://").split(":")
    head = (b"POST /v1/reports HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        reply = b""
        for _ in range(40):  # one byte every 0.2 s: never idle for 1 s
            try:
                sock.sendall(b"x")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if reply:
                break
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"not complete after 1.5 s" in reply
    assert time.monotonic() - t0 < 5.0


# ------------------------------------------------------------------------- not a chest X-ray


@pytest.fixture(scope="module")
def ood_reporter(tmp_path_factory, tiny_bundle_no_diffusion):
    """The tiny bundle with an out-of-distribution check calibrated on 30 radiograph-like images."""
    from report_builders import copy_with_ood_check

    from saerad.pipeline import Reporter

    root = tmp_path_factory.mktemp("ood-svc")
    return Reporter.from_bundle(copy_with_ood_check(tiny_bundle_no_diffusion, root / "bundle", seed=200))


def test_a_non_xray_is_flagged_in_every_format(start_server, ood_reporter, tmp_path):
    from report_builders import random_xray_png

    from saerad.report.schema import OUT_OF_DISTRIBUTION_WARNING

    live = start_server(use_reporter=ood_reporter)
    dot = {"file": ("dot.png", _png(np.full((1, 1), 255, np.uint8)))}
    like = {"file": ("x.png", random_xray_png(tmp_path / "x.png", seed=7).read_bytes())}
    with live.client() as c:
        flagged = c.post("/v1/reports", files=dot)
        assert flagged.headers["saerad-out-of-distribution"] == "true"
        body = flagged.json()
        assert body["out_of_distribution"]["flagged"] is True and body["warnings"] == [OUT_OF_DISTRIBUTION_WARNING]
        text = c.post("/v1/reports", params={"format": "text"}, files=dot)
        assert text.headers["saerad-out-of-distribution"] == "true" and text.text.startswith(OUT_OF_DISTRIBUTION_WARNING)
        fhir = c.post("/v1/reports", params={"format": "fhir"}, files=dot)
        assert OUT_OF_DISTRIBUTION_WARNING in base64.b64decode(fhir.json()["presentedForm"][0]["data"]).decode()
        ok = c.post("/v1/reports", files=like)
        assert ok.headers["saerad-out-of-distribution"] == "false" and ok.json()["warnings"] == []


def test_without_a_check_there_is_no_flag_header(client):
    r = client.post("/v1/reports", files={"file": ("x.png", _xray_like())})
    assert "saerad-out-of-distribution" not in r.headers and r.json()["out_of_distribution"] is None
