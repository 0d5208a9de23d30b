"""Preprocessing cost is bounded by the output, whatever the input's shape (a 2.6 KB PNG of
100 x 24,000 once took 4.5 GB), and images of radiograph shape take the path they always took."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from saerad.encoders.preprocess import ImagePreprocessor
from saerad.errors import ImageDecodeError, ImageTooLargeError
from saerad.imaging import load_xray

LETTERBOX = ImagePreprocessor(size={"height": 224, "width": 224}, resample=4, crop=None, rescale_factor=1 / 255,
                              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad_to_square=True)
SHORTEST_EDGE_CROP = ImagePreprocessor(size={"shortest_edge": 518}, resample=3, crop=(518, 518),
                                       rescale_factor=1 / 255, mean=(0.5,) * 3, std=(0.25,) * 3)
FIXED = ImagePreprocessor(size={"height": 224, "width": 224}, resample=2, crop=None, rescale_factor=1 / 255,
                          mean=None, std=None)
SHORTEST_EDGE_ONLY = ImagePreprocessor(size={"shortest_edge": 224}, resample=3, crop=None, rescale_factor=1 / 255,
                                       mean=None, std=None)


def _reference(pre: ImagePreprocessor, image: np.ndarray) -> np.ndarray:
    """The straightforward pipeline: pad in float, quantise, resize everything, crop."""
    if pre.pad_to_square:
        h, w = image.shape
        side = max(h, w)
        square = np.zeros((side, side), np.float32)
        square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image
        image = square
    gray = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    gray = gray.resize(pre._resize_to(gray.height, gray.width)[::-1], resample=pre.resample)
    arr = np.asarray(gray)
    if pre.crop is not None:
        top, left = (arr.shape[0] - pre.crop[0]) // 2, (arr.shape[1] - pre.crop[1]) // 2
        arr = arr[top : top + pre.crop[0], left : left + pre.crop[1]]
    return arr


@pytest.mark.parametrize("pre", [LETTERBOX, SHORTEST_EDGE_CROP, FIXED], ids=["letterbox", "crop", "fixed"])
@pytest.mark.parametrize("shape", [(512, 512), (1023, 850), (640, 1021), (37, 900), (3000, 40)])
def test_radiograph_shapes_take_the_unchanged_path(pre, shape):
    image = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    np.testing.assert_array_equal(pre.to_uint8(image), _reference(pre, image))


def _strip_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size", [(32_768, 1), (1, 32_768), (24_000, 100), (100, 24_000), (32_768, 2_000)],
                         ids=["wide", "tall", "100x24000", "24000x100", "64Mpx-strip"])
def test_extreme_aspect_ratios_cost_bounded_memory(size, peak_memory):
    data = _strip_png(*size)
    assert len(data) < 300_000  # kilobytes on the wire
    with peak_memory() as peak:
        xray = load_xray(data)
        outputs = [pre.to_uint8(xray.pixels) for pre in (LETTERBOX, SHORTEST_EDGE_CROP, FIXED)]
        del xray
    assert [o.shape for o in outputs] == [(224, 224), (518, 518), (224, 224)]
    assert peak.added_mb < 500, f"{size}: +{peak.added_mb:.0f} MB"
    letterbox = outputs[0]  # the gray strip in a black letterbox
    assert letterbox.max() > 0 and (letterbox == 0).mean() > 0.5


def test_a_shape_no_resize_can_bound_is_refused_clearly():
    with pytest.raises(ImageDecodeError, match="too elongated"):
        SHORTEST_EDGE_ONLY.to_uint8(np.full((1, 30_000), 0.5, np.float32))


def test_a_side_beyond_the_limit_is_refused_before_decoding(peak_memory):
    data = _strip_png(60_000_000, 1)  # 58 KB: it once asked for 12.8 PiB
    with peak_memory() as peak, pytest.raises(ImageTooLargeError, match="sides longer than"):
        load_xray(data)
    assert peak.added_mb < 50
