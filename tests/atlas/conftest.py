"""Fixtures of the atlas tests: the tiny bundle, the image folder, and a site built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from atlas_builders import build_atlas_bundle, write_images


@pytest.fixture(scope="session")
def atlas_bundle_dir(tmp_path_factory) -> Path:
    return build_atlas_bundle(tmp_path_factory.mktemp("atlas-bundle") / "bundle")


@pytest.fixture(scope="session")
def atlas_bundle(atlas_bundle_dir):
    from saerad.bundle import Bundle

    return Bundle.load(atlas_bundle_dir)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("atlas-images") / "xrays")


@pytest.fixture(scope="session")
def built_site(tmp_path_factory, atlas_bundle, image_folder):
    """(site folder, AtlasResult) of the whole tiny bundle on the synthetic images."""
    from saerad.atlas import AtlasOptions, build_atlas
    from saerad.datasets import load_dataset

    out = tmp_path_factory.mktemp("atlas-site") / "site"
    result = build_atlas(atlas_bundle, load_dataset("folder", image_folder), out,
                         AtlasOptions(top_k=6, sample_k=6, progress=False), dataset="synthetic")
    return out, result


@pytest.fixture(scope="session")
def expected_codes(atlas_bundle, image_folder):
    """Image id -> SAE code, computed here without the atlas (encoder + SAE on every readable image)."""
    import torch

    from saerad.encoders import load_encoder
    from saerad.imaging import load_xray

    encoder = load_encoder(atlas_bundle.encoder_spec)
    paths = sorted(image_folder.glob("case*.png"))
    with torch.no_grad():
        tokens = encoder.encode_images([load_xray(p).pixels for p in paths])
        codes = atlas_bundle.sae.encode(tokens).numpy()
    return {p.stem: codes[i] for i, p in enumerate(paths)}
