"""Difference maps: boxes come from |x_cf - x_rec|; no visible change gives no box."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.diffusion.maps import MIN_PEAK, difference_map, display_scale, localize
from saerad.diffusion.metrics import composition, feature_effect


def _blob(shape, cy, cx, radius, amplitude=0.3):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return amplitude * (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2)


def test_box_of_a_known_blob():
    rec = np.full((128, 128), 0.4, dtype=np.float32)
    cf = rec + _blob(rec.shape, cy=40, cx=90, radius=10).astype(np.float32)
    result = localize(rec, cf)
    assert len(result.boxes) == 1
    box = result.boxes[0]
    # The blob spans rows 30..50 and columns 80..100; smoothing widens it by ~1-2 px.
    assert box["x_min"] == pytest.approx(80 / 128, abs=3 / 128)
    assert box["x_max"] == pytest.approx(101 / 128, abs=3 / 128)
    assert box["y_min"] == pytest.approx(30 / 128, abs=3 / 128)
    assert box["y_max"] == pytest.approx(51 / 128, abs=3 / 128)


def test_zero_difference_gives_a_zero_map_and_no_boxes():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    result = localize(img, img.copy())
    assert float(result.heat.max()) == 0.0
    assert result.boxes == []


def test_invisible_noise_gives_no_boxes():
    rng = np.random.default_rng(0)
    rec = rng.random((64, 64)).astype(np.float32)
    cf = rec + 0.005 * rng.standard_normal(rec.shape).astype(np.float32)
    assert localize(rec, cf).boxes == []


def test_difference_map_needs_equal_shapes():
    with pytest.raises(ValueError):
        difference_map(np.zeros((4, 4)), np.zeros((4, 5)))


def test_display_scale_keeps_invisible_changes_dark():
    assert display_scale(np.full((4, 4), 0.5)) == 0.5
    assert display_scale(np.zeros((4, 4))) == 2 * MIN_PEAK


def test_changes_outside_the_body_are_ignored():
    rec = np.full((64, 64), 0.4, dtype=np.float32)
    cf = rec + _blob(rec.shape, cy=4, cx=4, radius=3, amplitude=0.5).astype(np.float32)
    body = np.zeros((64, 64), dtype=bool)
    body[10:54, 10:54] = True
    result = localize(rec, cf, body=body)
    assert result.boxes == [] and float(result.heat.max()) == 0.0


def test_composition_and_feature_effect():
    img = np.random.default_rng(1).random((32, 32))
    assert composition(img, img) == {"ssim": pytest.approx(1.0), "psnr": 100.0}
    before = np.array([1.0, 0.5, 0.0, 0.2])
    after = np.array([0.1, 0.5, 0.1, 0.2])
    eff = feature_effect(before, after, [0], "remove")
    assert eff["moved"] and eff["share"] == pytest.approx(0.9 / 1.0)
    assert not feature_effect(before, after, [0], "add")["moved"]
