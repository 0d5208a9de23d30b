"""Body mask: background beside the patient, burned-in letters and the film border are excluded."""

from __future__ import annotations

import numpy as np

from saerad.heatmaps.body import body_mask, border_band


def synthetic_chest(size: int = 256) -> np.ndarray:
    """Black air left and right of a gray body with two darker lungs, a white "L" in the top corner."""
    image = np.zeros((size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.abs(xx - 0.5) < 0.38
    image[body] = 0.6
    for cx in (0.33, 0.67):
        image[((xx - cx) / 0.12) ** 2 + ((yy - 0.45) / 0.3) ** 2 < 1] = 0.3
    image[int(0.06 * size) : int(0.14 * size), int(0.9 * size) : int(0.91 * size) + 2] = 1.0  # the L's stem
    image[int(0.13 * size) : int(0.14 * size) + 2, int(0.9 * size) : int(0.95 * size)] = 1.0  # its foot
    rng = np.random.default_rng(0)
    return np.clip(image + 0.01 * rng.standard_normal(image.shape).astype(np.float32), 0, 1)


def test_mask_keeps_the_body_and_drops_air_letters_and_border():
    image = synthetic_chest()
    mask = body_mask(image)
    assert mask.shape == image.shape
    size = image.shape[0]
    assert mask[int(0.45 * size), int(0.33 * size)] and mask[int(0.45 * size), int(0.67 * size)]  # both lungs
    assert mask[int(0.5 * size), int(0.5 * size)]  # mediastinum
    assert not mask[int(0.5 * size), int(0.03 * size)] and not mask[int(0.5 * size), int(0.97 * size)]  # air
    assert not mask[int(0.1 * size), int(0.905 * size)]  # the burned-in letter
    assert not mask[0].any() and not mask[:, -1].any()  # the border band


def test_mask_at_another_shape():
    assert body_mask(synthetic_chest(), (64, 48)).shape == (64, 48)


def test_flat_image_falls_back_to_the_interior():
    mask = body_mask(np.full((100, 80), 0.5, dtype=np.float32))
    np.testing.assert_array_equal(mask, border_band((100, 80)))


def test_border_band():
    band = border_band((100, 100), 0.05)
    assert band.sum() == 90 * 90 and not band[4].any() and band[5, 5:95].all()
