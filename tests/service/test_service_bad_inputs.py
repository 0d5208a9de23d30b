"""Every bad input is a 4xx JSON error ``{"error": {"code", "message"}}``, never a 500 or a traceback."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import httpx
import pytest

DICOM_NAME = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking 8-bit gray PNG header declaring 10^10 pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def dicom_variant(path: Path, *, drop_pixels: bool = False, transfer_syntax: str | None = None) -> bytes:
    import pydicom

    ds = pydicom.dcmread(path)
    if drop_pixels:
        del ds.PixelData
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def assert_json_error(r: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


# (name, request kwargs builder(fixtures_dir) -> dict, expected status(es), expected code or None)
UPLOAD_CASES = [
    ("no body at all", lambda fx: {}, 415, "unsupported_media_type"),
    ("empty multipart file", lambda fx: {"files": {"file": ("x.png", b"")}}, 400, "empty_file"),
    ("JSON instead of multipart", lambda fx: {"json": {"image": "x"}}, 415, "unsupported_media_type"),
    ("raw PNG body", lambda fx: {"content": (fx / "00000001_000.png").read_bytes(),
                                 "headers": {"content-type": "image/png"}}, 415, "unsupported_media_type"),
    ("multipart without a file part", lambda fx: {"data": {"other": "1"}, "files": {"x": ("a", b"b")}}, 422, None),
    ("not an image", lambda fx: {"files": {"file": ("notes.txt", b"The lungs are clear.\n" * 20)}}, 400, "invalid_image"),
    ("random bytes", lambda fx: {"files": {"file": ("a.bin", bytes(range(256)) * 8)}}, 400, "invalid_image"),
    ("truncated JPEG", lambda fx: {"files": {"file": ("t.jpg", (fx / "16747_3_1.jpg").read_bytes()[:4000])}}, 400, None),
    ("truncated PNG", lambda fx: {"files": {"file": ("t.png", (fx / "00000001_000.png").read_bytes()[:5000])}}, 400, None),
    ("PNG header bomb", lambda fx: {"files": {"file": ("bomb.png", png_header_bomb())}}, 413, "image_too_large"),
    ("DICOM without pixels", lambda fx: {"files": {"file": ("n.dcm", dicom_variant(fx / DICOM_NAME, drop_pixels=True))}},
     400, None),
    ("DICOM with unsupported transfer syntax",
     lambda fx: {"files": {"file": ("m.dcm", dicom_variant(fx / DICOM_NAME, transfer_syntax="1.2.840.10008.1.2.4.100"))}},
     400, None),
    ("DICOM with unknown transfer syntax",
     lambda fx: {"files": {"file": ("u.dcm", dicom_variant(fx / DICOM_NAME, transfer_syntax="1.2.3.4.5.6.7"))}},
     400, None),
    ("body over the size limit", lambda fx: {"files": {"file": ("big.png", b"\x89PNG" + b"\0" * (2 * 1024 * 1024))}},
     413, "payload_too_large"),
]


@pytest.mark.parametrize("name, build, status, code", UPLOAD_CASES, ids=[c[0] for c in UPLOAD_CASES])
def test_bad_uploads(client, fixtures_dir, name, build, status, code):
    r = client.post("/v1/reports", **build(fixtures_dir))
    assert_json_error(r, status, code)


def test_streamed_body_over_the_limit_is_cut_off_while_streaming(client, server):
    """Chunked upload without Content-Length: the limit trips on the bytes, before parsing ends."""
    sent = {"bytes": 0}

    def chunks():
        yield b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(64):  # 64 x 64 KiB = 4 MiB, limit is 1 MiB
            sent["bytes"] += 65536
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    try:
        r = client.post("/v1/reports", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    except httpx.TransportError:
        pytest.fail("the server should answer 413, not drop the connection")
    assert_json_error(r, 413, "payload_too_large")


BAD_OPTIONS = [
    ("/v1/reports", {"format": "xml"}),
    ("/v1/reports", {"top_k": "-1"}),  # 0 is valid (finding rules only), as in the CLI
    ("/v1/reports", {"top_k": "100001"}),
    ("/v1/reports", {"top_k": "many"}),
    ("/v1/reports", {"threshold": "-5"}),
    ("/v1/reports", {"threshold": "1e12"}),
    ("/v1/reports", {"threshold": "-1"}),
    ("/v1/reports", {"threshold": "nan"}),
    ("/v1/reports", {"threshold": "inf"}),
    ("/v1/reports", {"localize": "perhaps"}),
    ("/v1/interventions", {}),
    ("/v1/interventions", {"feature": "abc"}),
    ("/v1/interventions", {"feature": "0", "mode": "sideways"}),
    ("/v1/interventions", {"feature": "0", "strength": "0"}),
    ("/v1/interventions", {"feature": "0", "strength": "1e9"}),
    ("/v1/interventions", {"feature": "0", "steps": "100000"}),
    ("/v1/interventions", {"feature": ["0"] * 17}),
]


@pytest.mark.parametrize("path, params", BAD_OPTIONS, ids=[f"{p}?{q}" for p, q in BAD_OPTIONS])
def test_bad_options_are_422(client, fixtures_dir, path, params):
    png = (fixtures_dir / "00000001_000.png").read_bytes()
    r = client.post(path, params=params, files={"file": ("a.png", png)})
    body = assert_json_error(r, 422)
    assert body["error"]["code"] == "invalid_options"
    assert "details" in body["error"] and all("input" not in d for d in body["error"]["details"])


def test_unknown_intervention_feature_is_422(client, fixtures_dir):
    png = (fixtures_dir / "00000001_000.png").read_bytes()
    r = client.post("/v1/interventions", params={"feature": ["1", "9999"]}, files={"file": ("a.png", png)})
    assert_json_error(r, 422, "unknown_feature")


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/v1/features/9999", 404, "not_found"),
        ("GET", "/v1/features/16", 404, "not_found"),
        ("GET", "/v1/features/-1", 422, "invalid_options"),
        ("GET", "/v1/features/abc", 422, "invalid_options"),
        ("GET", "/v1/features?limit=0", 422, "invalid_options"),
        ("GET", "/v1/features?query=" + "x" * 300, 422, "invalid_options"),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", 404, "not_found"),
        ("GET", "/v1/jobs/../etc/passwd", 404, None),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/heatmaps/0.png", 404, "not_found"),
        ("GET", "/v1/jobs/x/heatmaps/abc.png", 422, "invalid_options"),
        ("GET", "/v1/jobs/x/images/secret.png", 422, "invalid_options"),
        ("GET", "/v2/reports", 404, "not_found"),
        ("DELETE", "/v1/reports", 405, "method_not_allowed"),
        ("GET", "/v1/reports", 405, "method_not_allowed"),
    ],
)
def test_unknown_resources_and_methods(client, method, path, status, code):
    assert_json_error(client.request(method, path), status, code)
