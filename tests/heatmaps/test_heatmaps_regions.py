"""Regions: boxes come from the map, restricted to the body; no visible change gives no box."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.heatmaps.regions import boxes_from_mask, find_regions, peak, restrict, threshold_map


def _blob(shape, cy, cx, radius, amplitude=0.3):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return amplitude * (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2)


def test_two_blobs_strongest_first_and_speckle_dropped():
    heat = _blob((64, 64), 10, 10, 6, 0.1) + _blob((64, 64), 45, 40, 8, 0.5)
    heat[60, 2] = 0.5  # one-pixel speckle: below the minimum area
    mask = threshold_map(heat, method="quantile", quantile=0.5)
    boxes = boxes_from_mask(mask, heat)
    assert len(boxes) == 2
    assert boxes[0]["x_min"] >= 0.5 and boxes[1]["x_max"] < 0.5


def test_a_map_outside_the_body_cannot_win():
    heat = _blob((64, 64), 4, 4, 3, 1.0) + _blob((64, 64), 32, 40, 6, 0.4)  # strongest blob in the corner
    body = np.zeros((64, 64), dtype=bool)
    body[8:56, 8:56] = True
    regions = find_regions(heat, body=body)
    assert regions.heat[4, 4] == 0 and regions.heat[32, 40] == pytest.approx(0.4)
    assert len(regions.boxes) == 1 and regions.boxes[0]["x_min"] > 0.5
    x, y = peak(regions.heat)
    assert abs(x - 40.5 / 64) < 7 / 64 and abs(y - 32.5 / 64) < 7 / 64


def test_mask_of_another_size_is_resized():
    heat = np.ones((40, 40), dtype=np.float32)
    body = np.zeros((10, 10), dtype=bool)
    body[:, 5:] = True
    out = restrict(heat, body)
    assert out[:, :20].max() == 0 and out[:, 20:].min() == 1


def test_otsu_level_comes_from_the_body_only():
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[16:48, 16:48] = 0.2
    heat[28:36, 28:36] = 1.0
    body = np.zeros((64, 64), dtype=bool)
    body[16:48, 16:48] = True
    # Over the whole image Otsu would take the 0.2 plateau too; within the body only the blob is salient.
    assert threshold_map(heat, support=body).sum() == 64


def test_nothing_above_the_floor_gives_no_boxes_and_no_peak():
    assert find_regions(np.zeros((32, 32))).boxes == []
    assert peak(np.zeros((8, 8))) is None
    noise = 0.005 * np.random.default_rng(0).random((32, 32))
    assert find_regions(noise, min_peak=0.02).boxes == []
