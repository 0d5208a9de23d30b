"""Pictures of maps: the heatmap PNG a report carries, an optional overlay for people, PNG encoding.

The heatmap is the map itself: one 8-bit channel covering the whole image at its aspect ratio,
brighter = stronger, scaled so that ``scale`` (by default the map's peak) is white. Tools can
threshold or resample it without undoing any colouring. The overlay (the X-ray in gray, the map in
a "hot" ramp whose opacity follows the map, boxes in green) is for looking at, never for parsing.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

from saerad.imaging import resize_image


def _fit(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = shape
    factor = min(1.0, max_side / max(h, w))
    return (max(1, round(h * factor)), max(1, round(w * factor)))


def heatmap_image(heat: np.ndarray, image_shape: tuple[int, int], *, max_side: int = 256,
                  scale: float | None = None) -> Image.Image:
    """The map as a single-channel ("L") image at the original image's aspect (longer side <= max_side)."""
    size = _fit(image_shape, max_side)
    values = np.clip(resize_image(np.asarray(heat, dtype=np.float32), size), 0.0, None)
    norm = scale if scale is not None else float(values.max())
    levels = np.clip(values / norm, 0.0, 1.0) if norm > 0 else np.zeros_like(values)
    return Image.fromarray((levels * 255.0 + 0.5).astype(np.uint8), mode="L")


def _hot(v: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white ramp, v in [0, 1] -> RGB floats."""
    return np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)


def overlay(image01: np.ndarray, heat: np.ndarray, boxes: list[dict[str, float]] | None = None, *,
            max_side: int = 512, scale: float | None = None) -> Image.Image:
    """The image in gray with the map blended on top and boxes drawn (RGB, the image's aspect).

    The map is divided by ``scale`` (default: its peak); the weakest 15% stay untinted.
    """
    image = np.asarray(image01, dtype=np.float32)
    size = _fit(image.shape, max_side)
    gray = resize_image(image, size)
    hm = np.clip(resize_image(np.asarray(heat, dtype=np.float32), size), 0, None)
    norm = scale if scale is not None else float(hm.max())
    v = np.clip(hm / norm, 0, 1) if norm > 0 else np.zeros_like(hm)
    alpha = 0.75 * np.clip((v - 0.15) / 0.85, 0, 1)[..., None]
    rgb = (1 - alpha) * np.repeat(gray[..., None], 3, axis=-1) + alpha * _hot(v)
    out = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(out)
    for box in boxes or []:
        draw.rectangle(
            [box["x_min"] * size[1], box["y_min"] * size[0], box["x_max"] * size[1] - 1, box["y_max"] * size[0] - 1],
            outline=(0, 255, 0), width=max(1, round(max(size) / 256)),
        )
    return out


def read_heatmap(png: bytes) -> np.ndarray:
    """A heatmap PNG (:func:`heatmap_image`) back as a [0, 1] map (1 = the brightest level)."""
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """[0, 1] floats (values outside clipped, NaN as 0) -> uint8 display levels."""
    return (np.clip(np.nan_to_num(np.asarray(image01, dtype=np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """PNG file bytes of a PIL image, or of an array: gray (H, W) or RGB(A) (H, W, C), uint8 as it is,
    anything else read as [0, 1] (:func:`to_uint8`)."""
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(array if array.dtype == np.uint8 else to_uint8(array))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
