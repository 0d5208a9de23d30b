"""The atlas at /atlas/: served read-only behind the API key, nothing outside the folder, no hidden files."""

from __future__ import annotations

import http.client

import numpy as np
import pytest
from PIL import Image

SECRET = "outside-the-atlas-7f3a"


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory, reporter):
    """A real atlas of the service's tiny bundle (two features, six images), next to a secret file."""
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset

    root = tmp_path_factory.mktemp("atlas-served")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8), mode="L").save(images / f"im{k}.png")
    site = root / "site"
    build_atlas(reporter.bundle, load_dataset("folder", images), site,
                AtlasOptions(features=[0, 1], top_k=3, sample_k=3, progress=False))
    (root / "secret.txt").write_text(SECRET)
    (site / "leak.txt").symlink_to(root / "secret.txt")
    return site


def _raw_get(url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (httpx would normalise '..' away)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_atlas_is_served_with_the_api_key(start_server, atlas_dir):
    live = start_server(api_key="atlas-key", atlas_dir=atlas_dir)
    key = {"X-API-Key": "atlas-key"}
    with live.client() as c:
        assert c.get("/atlas/").status_code == 401
        assert c.get("/atlas/index.html", headers={"X-API-Key": "wrong"}).status_code == 401
        index = c.get("/atlas/", headers=key)
        assert index.status_code == 200 and "Feature atlas" in index.text
        assert "default-src 'self'" in index.headers["content-security-policy"]
        assert index.headers["x-content-type-options"] == "nosniff"
        page = c.get("/atlas/features/f00001.html", headers={"Authorization": "Bearer atlas-key"})
        assert page.status_code == 200 and "<h1>Feature 1</h1>" in page.text
        script = c.get("/atlas/search-index.js", headers=key)
        assert script.status_code == 200 and script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        thumb = page.text.split('src="../img/')[1].split('"')[0]
        assert c.get(f"/atlas/img/{thumb}", headers=key).headers["content-type"] == "image/jpeg"
        missing = c.get("/atlas/features/f09999.html", headers=key)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert c.post("/atlas/index.html", headers=key).status_code == 405
        assert c.delete("/atlas/index.html", headers=key).status_code == 405


TRAVERSALS = (
    "/atlas/../secret.txt",
    "/atlas/%2e%2e/secret.txt",
    "/atlas/..%2fsecret.txt",
    "/atlas/features/../../secret.txt",
    "/atlas/%2e%2e%2fsecret.txt",
    "/atlas/leak.txt",  # a symlink out of the folder
    "/atlas/.cache/embeddings.safetensors",
    "/atlas/.cache/",
    "/atlas//etc/passwd",
)


def test_nothing_outside_the_atlas_or_hidden_is_served(start_server, atlas_dir):
    assert (atlas_dir / ".cache" / "embeddings.safetensors").is_file()
    live = start_server(api_key="atlas-key", atlas_dir=atlas_dir)
    for path in TRAVERSALS:
        status, body = _raw_get(live.url, path, {"X-API-Key": "atlas-key"})
        assert status in (400, 404), (path, status)
        assert SECRET.encode() not in body and b"root:" not in body and b"saerad.embeddings" not in body


def test_no_atlas_unless_configured(start_server):
    live = start_server()
    with live.client() as c:
        assert c.get("/atlas/").status_code == 404


def test_a_folder_that_is_not_an_atlas_is_refused(tmp_path):
    from saerad.errors import ConfigError
    from saerad.service.app import create_app
    from saerad.service.settings import ServiceSettings

    with pytest.raises(ConfigError, match="not an atlas folder"):
        create_app(ServiceSettings(atlas_dir=tmp_path, job_db=tmp_path / "jobs.sqlite3"))
