"""End-to-end: a real uvicorn server with the tiny bundle, called over HTTP with the fixture images."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from saerad.report.schema import GroundedReport

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def fixture_images(fixtures_dir: Path) -> list[Path]:
    images = sorted(p for p in fixtures_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    assert len(images) >= 5, "expected 2 PNG, 1 JPEG and 2 DICOM fixtures"
    return images


def post_image(client: httpx.Client, path: Path, **params) -> httpx.Response:
    return client.post("/v1/reports", params=params, files={"file": (path.name, path.read_bytes())})


def test_json_report_for_every_fixture_image(client, fixtures_dir):
    seen_formats = set()
    for path in fixture_images(fixtures_dir):
        r = post_image(client, path)
        assert r.status_code == 200, (path.name, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-request-id"]
        report = GroundedReport.model_validate(r.json())
        assert report.research_use_only is True
        assert report.bundle["name"] == "tiny"
        assert report.image is not None and report.image.height > 0
        seen_formats.add(report.image.source_format)
        assert {"decode", "encode", "sae"} <= set(report.timings_ms)
        for sentence in report.findings:
            assert sentence.features and sentence.boxes is None and sentence.heatmap is None
    assert seen_formats == {"png", "jpeg", "dicom"}


def test_text_and_fhir_formats(client, fixtures_dir):
    png = fixture_images(fixtures_dir)[0]
    text = post_image(client, png, format="text")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    as_json = GroundedReport.model_validate(post_image(client, png).json())
    assert text.text.strip() == as_json.text().strip()

    fhir = post_image(client, png, format="fhir")
    assert fhir.status_code == 200
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    resource = fhir.json()
    assert resource["resourceType"] == "DiagnosticReport" and resource["status"] == "preliminary"
    assert resource["id"] == fhir.headers["x-request-id"]


def test_report_options_change_the_selection(client, fixtures_dir):
    png = fixture_images(fixtures_dir)[0]
    full = GroundedReport.model_validate(post_image(client, png).json())
    assert full.findings, "the tiny SAE fires on every image; expected findings"
    none = GroundedReport.model_validate(post_image(client, png, threshold=1e6).json())
    assert none.findings == []
    one = GroundedReport.model_validate(post_image(client, png, top_k=1).json())
    assert len({f.id for s in one.findings for f in s.features}) <= 1


def test_request_ids_are_kept_when_plain_and_replaced_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-ID": "gw-42.a"}).headers["x-request-id"] == "gw-42.a"
    replaced = client.get("/healthz", headers={"X-Request-ID": "x" * 200}).headers["x-request-id"]
    assert replaced != "x" * 200 and len(replaced) == 32


def test_features_endpoints_never_ship_report_text(client):
    r = client.get("/v1/features/0")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == 0 and body["description"] == "Small left pleural effusion."
    assert body["top_images"] and all(t["report"] is None for t in body["top_images"])

    hits = client.get("/v1/features", params={"query": "pleural effusion", "limit": 5}).json()
    ids = [f["id"] for f in hits["features"]]
    assert 0 in ids and hits["query"] == "pleural effusion"
    page = client.get("/v1/features", params={"limit": 4, "offset": 4}).json()
    assert page["total"] == 16 and [f["id"] for f in page["features"]] == [4, 5, 6, 7]
    everything = client.get("/v1/features", params={"limit": 500}).text
    assert "Test report" not in everything


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["diffusion"] is True and ready["bundle"]["name"] == "tiny"
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/v1/reports", "/v1/interventions", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/heatmaps/{n}.png",
                  "/v1/features/{feature_id}", "/v1/features", "/healthz", "/readyz"):
        assert route in paths


def test_cors_closed_by_default_and_open_when_configured(server, start_server):
    preflight = {"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST"}
    with server.client() as c:
        r = c.options("/v1/reports", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    open_server = start_server(cors_origins="https://viewer.example")
    with open_server.client() as c:
        r = c.options("/v1/reports", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == "https://viewer.example"
        other = c.options("/v1/reports", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_api_key(start_server, fixtures_dir):
    live = start_server(api_key="s3cret-key")
    with live.client() as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}):
            r = c.get("/v1/features/0", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "unauthorized"
            assert "www-authenticate" in r.headers
        assert c.get("/v1/features/0", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/v1/features/0", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        png = fixture_images(fixtures_dir)[0]
        denied = c.post("/v1/reports", files={"file": (png.name, png.read_bytes())}, headers={"X-API-Key": "nope"})
        assert denied.status_code == 401


def test_bundle_without_diffusion_refuses_localisation_and_interventions(start_server, tiny_bundle_no_diffusion,
                                                                        fixtures_dir):
    from saerad.pipeline import Reporter

    live = start_server(use_reporter=Reporter.from_bundle(tiny_bundle_no_diffusion))
    png = fixture_images(fixtures_dir)[0]
    with live.client() as c:
        assert c.get("/readyz").json()["diffusion"] is False
        r = post_image(c, png, localize="counterfactual")
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_diffusion_model"
        assert post_image(c, png, localize="attribution").status_code == 202  # the encoder suffices
        r = c.post("/v1/interventions", params={"feature": 0}, files={"file": (png.name, png.read_bytes())})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_diffusion_model"
        assert post_image(c, png).status_code == 200  # plain reports still work


def test_saerad_serve_cli(tiny_bundle, fixtures_dir, tmp_path):
    """The documented entry point: ``saerad serve`` in its own process, JSON logs on stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SAERAD_JOB_DB": str(tmp_path / "jobs.sqlite3")}
    cmd = [sys.executable, "-c", "from saerad.cli import main; main()", "serve",
           "--bundle", str(tiny_bundle), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        png = fixture_images(fixtures_dir)[0]
        r = httpx.post(f"{base}/v1/reports", files={"file": (png.name, png.read_bytes())}, timeout=30)
        assert r.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit here.
    assert proc.returncode in (0, -15), out.decode()[-2000:]
    assert b'"logger": "saerad.service.access"' in out and b"Application shutdown complete" in out


@pytest.mark.parametrize("value, expected", [("", []), ("https://a.example, https://b.example",
                                                         ["https://a.example", "https://b.example"])])
def test_settings_from_environment(monkeypatch, value, expected):
    from saerad.service.settings import ServiceSettings

    monkeypatch.setenv("SAERAD_CORS_ORIGINS", value)
    monkeypatch.setenv("SAERAD_API_KEY", "zq-secret-77")
    monkeypatch.setenv("SAERAD_MAX_UPLOAD_BYTES", "1234")
    settings = ServiceSettings()
    assert settings.cors_origins == expected
    assert settings.api_key_bytes() == b"zq-secret-77" and "zq-secret-77" not in repr(settings)
    assert settings.max_upload_bytes == 1234
