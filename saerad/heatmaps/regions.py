"""From a map to regions: restrict to the body, threshold, connected components, boxes.

Boxes are the bounding boxes of the connected components of the thresholded map (Otsu by default,
or a quantile), normalised to 0..1 (x = column, y = row). A map covers the whole original image at
its aspect ratio, so normalised map coordinates ARE normalised image coordinates.

``min_peak`` is an absolute floor in the map's own units: a map whose strongest value is below it is
"nothing found" and yields no boxes, instead of Otsu splitting pure noise (a difference map of
invisible gray-level changes, an attribution map with no positive evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_BOXES = 5
MIN_AREA = 0.002  # components below 0.2% of the image are speckle


def restrict(heat: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The map with everything outside ``mask`` (resized to the map) set to 0."""
    heat = np.asarray(heat, dtype=np.float32)
    if mask is None:
        return heat
    return np.where(_fit_mask(mask, heat.shape), heat, 0.0).astype(np.float32)


def _fit_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from saerad.imaging import resize_image

    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        mask = resize_image(mask.astype(np.float32), tuple(shape)) >= 0.5
    return mask.astype(bool)


def threshold_map(heat: np.ndarray, *, method: str = "otsu", quantile: float = 0.95,
                  min_peak: float = 0.0, support: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the map's salient region (empty when the peak is not above ``min_peak``).

    ``support`` (a mask of the map's shape) limits the pixels whose histogram sets the level, so the
    zeros outside a body mask do not drag Otsu's threshold down.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.size == 0 or not float(heat.max()) > min_peak:
        return np.zeros(heat.shape, dtype=bool)
    values = heat[support] if support is not None and support.any() else heat.ravel()
    if method == "otsu":
        from skimage.filters import threshold_otsu

        level = float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())
    elif method == "quantile":
        level = float(np.quantile(values, quantile))
    else:
        raise ValueError(f"unknown threshold method {method!r} (otsu or quantile)")
    # Never call values below half the floor salient, whatever the histogram says.
    return heat > max(level, 0.5 * min_peak)


def boxes_from_mask(mask: np.ndarray, heat: np.ndarray | None = None, *, min_area: float = MIN_AREA,
                    max_boxes: int = MAX_BOXES) -> list[dict[str, float]]:
    """Bounding boxes (0..1) of connected components, strongest first (by map mass, else by area)."""
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
class Regions:
    """A map (restricted to the body when a mask was given), its salient mask and boxes."""

    heat: np.ndarray
    mask: np.ndarray
    boxes: list[dict[str, float]]


def find_regions(heat: np.ndarray, *, body: np.ndarray | None = None, method: str = "otsu",
                 quantile: float = 0.95, min_peak: float = 0.0) -> Regions:
    """Restrict ``heat`` to ``body`` (if given), threshold it and box the components."""
    support = None
    if body is not None:
        body = _fit_mask(body, np.shape(heat))
        support = body
    heat = restrict(heat, body)
    mask = threshold_map(heat, method=method, quantile=quantile, min_peak=min_peak, support=support)
    return Regions(heat=heat, mask=mask, boxes=boxes_from_mask(mask, heat))


def peak(heat: np.ndarray) -> tuple[float, float] | None:
    """(x, y) in 0..1 of a map's maximum (the pointing game's answer); None when nothing is positive."""
    heat = np.asarray(heat)
    if heat.size == 0 or not float(heat.max()) > 0:
        return None
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return ((col + 0.5) / heat.shape[1], (row + 0.5) / heat.shape[0])
