"""Difference maps, boxes and overlays.

The map is ``|x_cf - x_rec|`` smoothed with a Gaussian (never ``|x_cf - x|``: the reconstruction
error of the input is not the effect of the edit). Boxes are the bounding boxes of the connected
components of the thresholded map (Otsu by default, or a quantile), normalised to 0..1. Because the
model image is the WHOLE original film resized to a square (see :mod:`saerad.diffusion.data`),
normalised coordinates on the map are normalised coordinates on the original image.

``min_peak`` is an absolute floor in image units ([0, 1] gray levels): a map whose strongest change
is below it is "no visible change" and yields no boxes, instead of Otsu splitting pure noise.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

MIN_PEAK = 0.02  # 2% of the gray range, ~5 levels of an 8-bit display: below this nothing is visible
MAX_BOXES = 5


def difference_map(reconstruction: np.ndarray, counterfactual: np.ndarray, *, sigma: float | None = None) -> np.ndarray:
    """Smoothed absolute difference of two [0, 1] images of the same size.

    ``sigma`` defaults to 1.5 px at 128 px and scales with the resolution, so the smoothing covers
    the same anatomy at 256 px.
    """
    from scipy.ndimage import gaussian_filter

    rec = np.asarray(reconstruction, dtype=np.float32)
    cf = np.asarray(counterfactual, dtype=np.float32)
    if rec.shape != cf.shape:
        raise ValueError(f"maps need images of one size, got {rec.shape} and {cf.shape}")
    if sigma is None:
        sigma = 1.5 * rec.shape[-1] / 128.0
    diff = np.abs(cf - rec)
    return gaussian_filter(diff, sigma=sigma, mode="nearest") if sigma > 0 else diff


def threshold_map(heat: np.ndarray, *, method: str = "otsu", quantile: float = 0.95,
                  min_peak: float = MIN_PEAK) -> np.ndarray:
    """Boolean mask of the map's salient region (empty when the map's peak is below ``min_peak``)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.size == 0 or float(heat.max()) < min_peak:
        return np.zeros(heat.shape, dtype=bool)
    if method == "otsu":
        from skimage.filters import threshold_otsu

        level = float(threshold_otsu(heat))
    elif method == "quantile":
        level = float(np.quantile(heat, quantile))
    else:
        raise ValueError(f"unknown threshold method {method!r} (otsu or quantile)")
    # Never call pixels whose change is invisible salient, whatever the histogram says.
    return heat > max(level, 0.5 * min_peak)


def boxes_from_mask(mask: np.ndarray, heat: np.ndarray | None = None, *, min_area: float = 0.002,
                    max_boxes: int = MAX_BOXES) -> list[dict[str, float]]:
    """Bounding boxes (0..1, x = column) of connected components, strongest first.

    Components smaller than ``min_area`` of the image are dropped (speckle); components are ranked
    by the map mass inside them (their pixel count when no map is given).
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    area = ndimage.sum(mask, labels, index)
    weight = ndimage.sum(heat if heat is not None else mask, labels, index)
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(labels)):
        if sl is None or area[k] < min_area * h * w:
            continue
        boxes.append((float(weight[k]), {
            "x_min": sl[1].start / w, "y_min": sl[0].start / h,
            "x_max": sl[1].stop / w, "y_max": sl[0].stop / h,
        }))
    boxes.sort(key=lambda item: -item[0])
    return [box for _, box in boxes[:max_boxes]]


@dataclass
class Localization:
    heat: np.ndarray  # smoothed |x_cf - x_rec| at the model resolution
    mask: np.ndarray
    boxes: list[dict[str, float]]


def localize(reconstruction: np.ndarray, counterfactual: np.ndarray, *, method: str = "otsu",
             quantile: float = 0.95, min_peak: float = MIN_PEAK) -> Localization:
    heat = difference_map(reconstruction, counterfactual)
    mask = threshold_map(heat, method=method, quantile=quantile, min_peak=min_peak)
    return Localization(heat=heat, mask=mask, boxes=boxes_from_mask(mask, heat))


# ---------------------------------------------------------------------------- pictures


def _heat_colors(v: np.ndarray) -> np.ndarray:
    """A black-red-yellow-white ramp ("hot"), v in [0, 1] -> RGB floats."""
    r = np.clip(3 * v, 0, 1)
    g = np.clip(3 * v - 1, 0, 1)
    b = np.clip(3 * v - 2, 0, 1)
    return np.stack([r, g, b], axis=-1)


def overlay(image01: np.ndarray, heat: np.ndarray, boxes: list[dict[str, float]] | None = None, *,
            max_side: int = 512, scale: float | None = None) -> Image.Image:
    """The image in gray with the map blended on top (opacity follows the map) and boxes drawn.

    The map is scaled by ``max(peak, 2 * MIN_PEAK)`` unless ``scale`` is given, so a map of noise
    stays faint instead of being stretched to full colour.
    """
    from saerad.diffusion.data import resize_image

    image = np.asarray(image01, dtype=np.float32)
    h, w = image.shape
    factor = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    gray = resize_image(image, size)
    hm = np.clip(resize_image(np.asarray(heat, dtype=np.float32), size), 0, None)
    norm = scale if scale is not None else max(float(hm.max()), 2 * MIN_PEAK)
    v = np.clip(hm / norm, 0, 1)
    alpha = 0.75 * np.clip((v - 0.15) / 0.85, 0, 1)[..., None]  # the weakest 15% of the map stay untinted
    rgb = (1 - alpha) * np.repeat(gray[..., None], 3, axis=-1) + alpha * _heat_colors(v)
    out = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(out)
    for box in boxes or []:
        draw.rectangle(
            [box["x_min"] * size[1], box["y_min"] * size[0], box["x_max"] * size[1] - 1, box["y_max"] * size[0] - 1],
            outline=(0, 255, 0), width=max(1, round(max(size) / 256)),
        )
    return out


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
