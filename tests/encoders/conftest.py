"""Fixtures of the encoder tests: a tiny Dinov2 checkpoint and a folder of small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_dinov2 import make_tiny_dinov2


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    return make_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2"))


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    """Seven small synthetic radiograph-like PNGs of varied shapes and one unreadable file."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        height, width = 60 + 7 * i, 80 - 3 * i
        yy, xx = np.mgrid[0:height, 0:width]
        img = 128 + 60 * np.sin(xx / (5 + i)) * np.cos(yy / 9) + rng.normal(0, 10, (height, width))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    (root / "img7.png").write_bytes(b"definitely not a png")
    return root
