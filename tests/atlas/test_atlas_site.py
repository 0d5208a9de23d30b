"""The atlas site on a tiny bundle: what is on the pages, escaping, resuming, inputs it refuses."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from atlas_builders import HOSTILE, N_IMAGES, TRACKED

from saerad.errors import BundleError, ConfigError


def test_site_layout_and_summary(built_site, atlas_bundle):
    out, result = built_site
    d_sae = atlas_bundle.sae.cfg.d_sae
    assert result.features == d_sae and result.images == N_IMAGES  # broken.png is left out
    for rel in ("index.html", "search-index.js", "atlas.json", "assets/atlas.css", "assets/atlas.js"):
        assert (out / rel).is_file(), rel
    assert sorted(p.name for p in (out / "features").iterdir()) == [f"f{i:05d}.html" for i in range(d_sae)]
    summary = json.loads((out / "atlas.json").read_text())
    assert summary["format"] == "saerad-atlas/1" and summary["site"]["n_images"] == N_IMAGES
    assert not list(out.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_statistics_match_an_independent_encoding(built_site, expected_codes):
    out, _ = built_site
    summary = json.loads((out / "atlas.json").read_text())
    codes = np.stack(list(expected_codes.values()))
    ids = list(expected_codes)
    for feat in summary["features"]:
        col = codes[:, feat["id"]]
        assert feat["n_active"] == int((col > 0).sum())
        assert feat["max"] == pytest.approx(float(col.max()), rel=1e-4, abs=1e-6)
        strongest = ids[int(np.argmax(col))]
        if feat["n_active"]:
            assert feat["top"][0][0] == strongest
            assert feat["top"][0][1] == pytest.approx(float(col.max()), rel=1e-4)
        assert sum(feat["hist_counts"]) == feat["n_active"]


def test_index_rows_and_hostile_text_is_escaped(built_site, atlas_bundle):
    out, _ = built_site
    html = (out / "index.html").read_text()
    rows = re.findall(r'<tr data-id="(\d+)"', html)
    assert [int(r) for r in rows] == list(range(atlas_bundle.sae.cfg.d_sae))
    assert HOSTILE not in html and "&lt;/script&gt;&lt;img src=x" in html
    page6 = (out / "features" / "f00006.html").read_text()
    assert "<img src=x" not in page6 and "&lt;img src=x onerror=" in page6
    js = (out / "search-index.js").read_text()
    assert "</script>" not in js and "<\\/script>" in js
    row4 = re.search(r'<tr data-id="4".*?</tr>', html).group(0)
    assert TRACKED[4] in row4 and "usable" in row4 and "<svg class=\"spark\"" in row4


def test_feature_page_contents(built_site, expected_codes):
    out, _ = built_site
    summary = {f["id"]: f for f in json.loads((out / "atlas.json").read_text())["features"]}
    fid = max(summary, key=lambda i: summary[i]["n_active"])
    page = (out / "features" / f"f{fid:05d}.html").read_text()
    assert f"<h1>Feature {fid}</h1>" in page and '<svg class="hist"' in page
    imgs = re.findall(r'<img src="\.\./(img/[0-9a-f]+\.jpg)"', page)
    assert len(imgs) >= 6 and all((out / rel).is_file() for rel in imgs)
    assert 'rel="prev"' in page or fid == 0
    assert "q50 0.4, q90 0.8, q95 0.9, q99 1" in page  # the dictionary's training quantiles


def test_rerun_reuses_thumbnails_and_pages(tmp_path, atlas_bundle, image_folder, monkeypatch):
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.atlas import thumbnails as thumbnails_module
    from saerad.datasets import load_dataset

    studies = load_dataset("folder", image_folder)
    opts = AtlasOptions(features=[0, 1, 2], top_k=4, sample_k=4, progress=False)
    first = build_atlas(atlas_bundle, studies, tmp_path / "site", opts)
    assert first.pages_unchanged == 0 and first.thumbnails > 0
    cache = tmp_path / "site" / ".cache" / "embeddings.safetensors"
    assert cache.is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished thumbnail was made again")

    def no_embedding(*args, **kwargs):
        raise AssertionError("the cached class tokens were not reused")

    monkeypatch.setattr("saerad.encoders.extract.run_embedding", no_embedding)
    monkeypatch.setattr("saerad.imaging.load_xray", no_decoding)
    monkeypatch.setattr(thumbnails_module, "to_thumbnail", no_decoding)
    second = build_atlas(atlas_bundle, studies, tmp_path / "site", opts)
    # At most the index changes (it shows the build time); tokens come from the cache.
    assert second.pages_written <= 1 and second.pages_unchanged + second.pages_written == first.pages_written
    assert second.thumbnails == first.thumbnails


def test_embeddings_file_is_used_and_checked(tmp_path, atlas_bundle, image_folder):
    import torch

    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset
    from saerad.encoders.store import EmbeddingSet

    studies = load_dataset("folder", image_folder)
    ids = [f"case{k:02d}" for k in range(10)]
    tokens = torch.randn(10, atlas_bundle.sae.cfg.d_in, generator=torch.Generator().manual_seed(1))
    given = EmbeddingSet(ids=ids, tokens=tokens, encoder=atlas_bundle.encoder_spec)
    result = build_atlas(atlas_bundle, studies, tmp_path / "a", AtlasOptions(features=[3], progress=False),
                         embeddings=given)
    assert result.images == 10 and not (tmp_path / "a" / ".cache").exists()

    wrong = EmbeddingSet(ids=ids, tokens=torch.randn(10, 7), encoder=atlas_bundle.encoder_spec)
    with pytest.raises(BundleError, match="7-d"):
        build_atlas(atlas_bundle, studies, tmp_path / "b", AtlasOptions(progress=False), embeddings=wrong)
    foreign = EmbeddingSet(ids=ids, tokens=tokens, encoder="default")
    with pytest.raises(BundleError, match="not from this bundle"):
        build_atlas(atlas_bundle, studies, tmp_path / "b", AtlasOptions(progress=False), embeddings=foreign)
    other = EmbeddingSet(ids=["x", "y"], tokens=tokens[:2], encoder=atlas_bundle.encoder_spec)
    with pytest.raises(ConfigError, match="none of the dataset's images"):
        build_atlas(atlas_bundle, studies, tmp_path / "c", AtlasOptions(progress=False), embeddings=other)


def test_feature_selection(tmp_path, atlas_bundle, image_folder):
    from saerad.atlas import AtlasOptions, build_atlas, parse_feature_spec
    from saerad.datasets import load_dataset

    assert parse_feature_spec("0-2, 7") == [0, 1, 2, 7] and parse_feature_spec(" ") is None
    for bad in ("3-1", "a", "1-x"):
        with pytest.raises(ConfigError, match="bad feature list"):
            parse_feature_spec(bad)
    with pytest.raises(ConfigError, match="feature 99 does not exist"):
        build_atlas(atlas_bundle, load_dataset("folder", image_folder), tmp_path / "s",
                    AtlasOptions(features=[1, 99], progress=False))


def test_out_must_be_a_new_or_atlas_folder(tmp_path, atlas_bundle, image_folder):
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset

    studies = load_dataset("folder", image_folder)
    (tmp_path / "file").write_text("x")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "home", "holds no atlas")):
        with pytest.raises(ConfigError, match=message):
            build_atlas(atlas_bundle, studies, out, AtlasOptions(features=[0], progress=False))
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["notes.txt"]


def test_counterfactuals_need_a_diffusion_model(tmp_path, atlas_bundle, image_folder):
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset

    with pytest.raises(ConfigError, match="diffusion model"):
        build_atlas(atlas_bundle, load_dataset("folder", image_folder), tmp_path / "s",
                    AtlasOptions(features=[0], counterfactuals=1, progress=False))


def test_cli(tmp_path, atlas_bundle_dir, image_folder):
    from typer.testing import CliRunner

    from saerad.cli import _register, app

    _register()
    out = tmp_path / "site"
    res = CliRunner().invoke(app, ["atlas", "--bundle", str(atlas_bundle_dir), "--dataset", "folder", "--root",
                                   str(image_folder), "--out", str(out), "--features", "0-3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert str(out / "index.html") in res.output
    assert len(list((out / "features").iterdir())) == 4
