"""Pictures: the heatmap is one gray channel over the whole image; the overlay is RGB."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from saerad.heatmaps.pictures import data_uri, heatmap_image, overlay, png_bytes


def test_heatmap_is_single_channel_with_the_image_aspect_and_brighter_where_stronger():
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[10:20, 40:50] = 2.0
    heat[40:50, 10:20] = 1.0
    picture = heatmap_image(heat, (1000, 500), max_side=200)
    assert picture.mode == "L" and picture.size == (100, 200)
    values = np.asarray(picture)
    assert values.max() == 255
    assert values[30:40, 70:75].mean() > values[130:150, 20:30].mean() > 100 > values[90:110, 45:55].mean()


def test_heatmap_scale_keeps_weak_maps_dark():
    picture = heatmap_image(np.full((8, 8), 0.01, dtype=np.float32), (8, 8), scale=0.04)
    assert np.asarray(picture).max() == 64
    assert np.asarray(heatmap_image(np.zeros((8, 8)), (8, 8))).max() == 0


def test_overlay_keeps_the_original_aspect_and_png_round_trip():
    picture = overlay(np.zeros((300, 200)), np.ones((64, 64)), [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.5, "y_max": 0.5}])
    assert picture.size == (200, 300) and picture.mode == "RGB"
    with Image.open(io.BytesIO(png_bytes(picture))) as im:
        assert im.size == (200, 300)
    assert data_uri(picture).startswith("data:image/png;base64,")


def test_png_bytes_of_arrays_and_pictures():
    import io

    from PIL import Image

    from saerad.heatmaps.pictures import data_uri, png_bytes

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
