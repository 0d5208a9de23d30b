"""Extra views of an X-ray for SAE training (``saerad embed --augment K``).

Cheap, anatomy-preserving perturbations on the [0, 1] image before the encoder's preprocessing:
a random crop (70-100% of the area, aspect 0.9-1.1) and an intensity jitter (gamma 0.8-1.25,
contrast x0.9-1.1, brightness +-0.05), the kind of variation between two exposures of one patient.
No left-right flips: a flipped chest film shows the heart on the right (dextrocardia), which a
dictionary feature could learn as a finding. Each view is seeded by (seed, image id, view number),
so a resumed job recomputes the same views.
"""

from __future__ import annotations

import math
import zlib

import numpy as np


def view_rng(seed: int, image_id: str, view: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8")), view])


def augment_view(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of a (H, W) float image in [0, 1]; returns a new float32 array in [0, 1]."""
    height, width = pixels.shape
    area = rng.uniform(0.70, 1.0) * height * width
    aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    crop_h = min(height, max(1, int(round(math.sqrt(area / aspect)))))
    crop_w = min(width, max(1, int(round(math.sqrt(area * aspect)))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    view = np.asarray(pixels[top : top + crop_h, left : left + crop_w], dtype=np.float32)
    gamma = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    contrast = rng.uniform(0.9, 1.1)
    brightness = rng.uniform(-0.05, 0.05)
    view = np.power(view, np.float32(gamma))
    view = (view - 0.5) * np.float32(contrast) + np.float32(0.5 + brightness)
    return np.clip(view, 0.0, 1.0, out=view)
