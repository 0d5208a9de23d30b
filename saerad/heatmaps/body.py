"""Where in a chest X-ray a finding can be: an intensity-based body mask.

Why a mask: a counterfactual or attribution map is a change or a sensitivity, and the pixels that
change most when a generator re-renders a film, or that a ViT is most sensitive to, are often not the
patient: the film's border and collimation edges, burned-in letters ("L", "PORTABLE"), the black
background beside the shoulders. A radiologist's box never lies there. Restricting maps to the
body removes those winners without learning anything (no model, no labels, so it cannot overfit a
benchmark); it does not try to find the lungs, which an intensity rule cannot do safely (a dense
consolidation is as bright as the heart and would be cut away with the background).

How (on a 128 px copy; the mask is returned at the requested size):

1. a band of 3% of the side along the image border is excluded;
2. background is what is nearly black (< 0.08) or nearly white (> 0.97: collimator shutters,
   unexposed film) after a 1 px Gaussian, AND connected to the image edge;
3. burned-in text is a small bright mark (>= 0.25 brighter than a grey opening with a 4 px disc)
   on a dark ground (< 0.3) or saturated (> 0.9), smaller than 0.5% of the image, within the
   outer 20% frame; such marks are dilated by 2 px and excluded;
4. the body is the largest remaining component with its holes filled (holes: bright devices,
   letters the rule missed inside the body stay excluded only where step 3 found them).

If the body covers less than 30% of the image (a rule failing on an unusual film) the mask falls
back to the image minus the band, so a mask never hides most of the image.
"""

from __future__ import annotations

import numpy as np

WORK_SIDE = 128
BORDER = 0.03
DARK, WHITE = 0.08, 0.97
TEXT_CONTRAST, TEXT_GROUND, TEXT_SATURATED = 0.25, 0.3, 0.9
TEXT_MAX_AREA, TEXT_FRAME = 0.005, 0.2
MIN_BODY = 0.3


def border_band(shape: tuple[int, int], fraction: float = BORDER) -> np.ndarray:
    """True inside the image, False within ``fraction`` of the longer side from any edge."""
    h, w = shape
    band = max(1, round(fraction * max(h, w)))
    inside = np.zeros((h, w), dtype=bool)
    inside[band : h - band, band : w - band] = True
    return inside


def body_mask(image01: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean body mask of a [0, 1] gray chest X-ray, at ``shape`` (default: the image's own)."""
    from saerad.imaging import resize_image

    image = np.asarray(image01, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"expected a (H, W) gray image, got shape {image.shape}")
    mask = _body_at_work_size(resize_image(image, (WORK_SIDE, WORK_SIDE)))
    out_shape = tuple(shape) if shape is not None else image.shape
    return (resize_image(mask.astype(np.float32), out_shape) >= 0.5) & border_band(out_shape)


def _body_at_work_size(small: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.morphology import disk, opening

    inside = border_band(small.shape)
    smooth = ndimage.gaussian_filter(small, 1.0)
    edge = ~border_band(small.shape, 1.0 / small.shape[0])  # the outermost pixel ring
    extreme = (smooth < DARK) | (smooth > WHITE)
    labels, _ = ndimage.label(extreme)
    touching = np.unique(labels[edge & extreme])
    background = np.isin(labels, touching[touching > 0])

    ground = opening(small, disk(4))  # unsmoothed: letters are a pixel or two wide at this size
    marks = (small - ground > TEXT_CONTRAST) & ((ground < TEXT_GROUND) | (small > TEXT_SATURATED))
    labels, n = ndimage.label(marks)
    frame = ~border_band(small.shape, TEXT_FRAME)
    text = np.zeros_like(marks)
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        component = labels[sl] == k
        if component.sum() < TEXT_MAX_AREA * small.size and (component & frame[sl]).any():
            text[sl] |= component
    text = ndimage.binary_dilation(text, structure=disk(2))

    body = _largest(inside & ~background & ~text)
    body = ndimage.binary_fill_holes(body) & inside & ~text
    return body if body.mean() >= MIN_BODY else inside


def _largest(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))
