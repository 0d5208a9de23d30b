"""Maps and boxes: boxes come from the map; no visible change gives no box."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.diffusion.maps import boxes_from_mask, difference_map, localize, overlay, threshold_map
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


def test_two_blobs_strongest_first_and_speckle_dropped():
    heat = _blob((64, 64), 10, 10, 6, 0.1) + _blob((64, 64), 45, 40, 8, 0.5)
    heat[60, 2] = 0.5  # one-pixel speckle: below the minimum area
    mask = threshold_map(heat, method="quantile", quantile=0.5)
    boxes = boxes_from_mask(mask, heat)
    assert len(boxes) == 2
    assert boxes[0]["x_min"] >= 0.5 and boxes[1]["x_max"] < 0.5


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


def test_overlay_keeps_the_original_aspect():
    picture = overlay(np.zeros((300, 200)), np.ones((64, 64)), [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.5, "y_max": 0.5}])
    assert picture.size == (200, 300) and picture.mode == "RGB"


def test_composition_and_feature_effect():
    img = np.random.default_rng(1).random((32, 32))
    assert composition(img, img) == {"ssim": pytest.approx(1.0), "psnr": 100.0}
    before = np.array([1.0, 0.5, 0.0, 0.2])
    after = np.array([0.1, 0.5, 0.1, 0.2])
    eff = feature_effect(before, after, [0], "remove")
    assert eff["moved"] and eff["share"] == pytest.approx(0.9 / 1.0)
    assert not feature_effect(before, after, [0], "add")["moved"]


def test_png_bytes_of_arrays_and_pictures():
    import io

    from PIL import Image

    from saerad.diffusion.maps import data_uri, png_bytes

    def decoded(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)

    gray = np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)  # [0, 1] floats, clipped above
    assert decoded(png_bytes(gray)).tolist() == [[0, 128], [255, 255]]
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # uint8 as it is
    assert np.array_equal(decoded(png_bytes(rgb)), rgb)
    picture = Image.fromarray(rgb)
    assert np.array_equal(decoded(png_bytes(picture)), rgb)
    assert data_uri(picture).startswith("data:image/png;base64,")
