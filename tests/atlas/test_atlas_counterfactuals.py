"""Counterfactual strips with a tiny (untrained) diffusion model: made, shown, reused on a rerun."""

from __future__ import annotations

import json

import pytest
from atlas_builders import build_atlas_bundle

from saerad.atlas.counterfactuals import pick_images


def test_pick_images_alternates_strong_and_silent():
    top = [(1, 3.0), (2, 2.0), (3, 1.0)]
    sample = [(9, 0.5), (7, 0.0), (8, 0.0)]
    assert pick_images(top, sample, 4) == [(1, 3.0), (7, 0.0), (2, 2.0), (8, 0.0)]
    assert pick_images(top, [], 2) == [(1, 3.0), (2, 2.0)]
    assert pick_images([], [], 3) == []


@pytest.fixture(scope="module")
def bundle_with_diffusion(tmp_path_factory):
    from report_builders import D_IN

    from saerad.bundle import Bundle
    from saerad.diffusion.model import TokenConditionedUNet, save_diffusion

    root = tmp_path_factory.mktemp("atlas-cf")
    model = TokenConditionedUNet.from_architecture("tiny", token_dim=D_IN, resolution=16)
    diffusion = save_diffusion(model, root / "unet", metadata={"test": True})
    return Bundle.load(build_atlas_bundle(root / "bundle", diffusion_dir=diffusion))


def test_strips_are_rendered_and_reused(tmp_path, bundle_with_diffusion, image_folder, monkeypatch):
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset

    studies = load_dataset("folder", image_folder)
    opts = AtlasOptions(features=[0, 1, 11], counterfactuals=2, steps=2, top_k=4, sample_k=30, progress=False)
    first = build_atlas(bundle_with_diffusion, studies, tmp_path / "site", opts)
    summary = {f["id"]: f for f in json.loads((tmp_path / "site" / "atlas.json").read_text())["features"]}
    # described features get strips by default (0 is silent on these images: add only; 1 fires on
    # all: remove only); feature 11 has no description
    assert summary[0]["strips"] == 2 and summary[1]["strips"] == 2 and summary[11]["strips"] == 0
    assert first.strips == 4
    records = [json.loads(p.read_text()) for p in (tmp_path / "site" / "cf").glob("*/strip.json")]
    assert len(records) == 4
    for r in records:
        assert r["map_of"] == ("remove" if r["activation"] > 0 else "add")  # the edit that changes the image
        assert set(r["tiles"]) == {"original", "reconstruction", "add", "remove", "map"}
        assert all((tmp_path / "site" / rel).is_file() for rel in r["tiles"].values())
        assert set(r["effect"]) == {"add", "remove"}
    page = (tmp_path / "site" / "features" / "f00000.html").read_text()
    assert page.count('class="strip"') == 2 and "−feature" in page

    def no_rendering(*args, **kwargs):
        raise AssertionError("a finished strip was rendered again")

    monkeypatch.setattr("saerad.diffusion.intervene.intervene", no_rendering)
    second = build_atlas(bundle_with_diffusion, studies, tmp_path / "site", opts)
    assert second.strips == 4 and second.pages_written <= 1
