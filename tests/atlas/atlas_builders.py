"""Builders of the atlas tests: a tiny bundle with tracked conditions and a hostile description, and a
folder of synthetic X-rays (plus one unreadable file). Imported by conftest and test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from report_builders import build_tiny_bundle, make_tiny_dictionary  # noqa: E402

N_IMAGES = 30
HOSTILE = 'Degenerative changes </script><img src=x onerror="alert(1)"> & more.'
TRACKED = {4: "Support Devices", 0: "Pleural Effusion"}


def write_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> Path:
    """``n`` 64 x 80 grayscale PNGs (blobs of random place, size and brightness) and one broken file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:80, 0:64] / 63.0
    for k in range(n):
        cx, cy, r, b = rng.uniform(0.2, 0.8), rng.uniform(0.2, 1.0), rng.uniform(0.01, 0.08), rng.uniform(0.3, 1.0)
        img = 0.15 + b * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r) + 0.05 * rng.standard_normal(xx.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").save(folder / f"case{k:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def atlas_dictionary():
    """The report tests' dictionary with two tracked conditions and one description full of markup."""
    dictionary = make_tiny_dictionary(with_report_text=False)
    feats = list(dictionary.features)
    feats[6] = feats[6].model_copy(update={"description": HOSTILE})
    feats[2] = feats[2].model_copy(update={"labels": {"Cardiomegaly": 1, "Edema": 0}})
    meta = {"label_driven": {str(k): {"condition": v} for k, v in TRACKED.items()}}
    return dictionary.model_copy(update={"features": feats, "meta": meta})


def build_atlas_bundle(out: Path, *, diffusion_dir: Path | None = None) -> Path:
    return build_tiny_bundle(out, name="tiny-atlas", dictionary=atlas_dictionary(), diffusion_dir=diffusion_dir)
