"""Difference maps of counterfactuals.

The map is ``|x_cf - x_rec|`` smoothed with a Gaussian (never ``|x_cf - x|``: the reconstruction
error of the input is not the effect of the edit), restricted to the body of the input
(:mod:`saerad.heatmaps.body`) so that a border or a burned-in label the generator re-renders cannot
win; regions and boxes come from :mod:`saerad.heatmaps.regions`. The model image is the WHOLE
original film resized to a square (see :mod:`saerad.diffusion.data`), so normalised coordinates on
the map are normalised coordinates on the original image.

:data:`MIN_PEAK` is in image units ([0, 1] gray levels): a map whose strongest change is below it is
"no visible change" and yields no boxes.
"""

from __future__ import annotations

import numpy as np

from saerad.heatmaps.regions import Regions, find_regions

MIN_PEAK = 0.02  # 2% of the gray range, ~5 levels of an 8-bit display: below this nothing is visible


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


def localize(reconstruction: np.ndarray, counterfactual: np.ndarray, *, body: np.ndarray | None = None,
             method: str = "otsu", quantile: float = 0.95, min_peak: float = MIN_PEAK) -> Regions:
    """Difference map of one edit, restricted to ``body`` (a body mask), thresholded and boxed."""
    heat = difference_map(reconstruction, counterfactual)
    return find_regions(heat, body=body, method=method, quantile=quantile, min_peak=min_peak)


def display_scale(heat: np.ndarray) -> float:
    """Brightness scale of a difference map: its peak, but never below ``2 * MIN_PEAK`` so that a map of
    invisible changes stays dark instead of being stretched to white."""
    return max(float(np.max(heat)) if np.size(heat) else 0.0, 2 * MIN_PEAK)
