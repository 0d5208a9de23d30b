"""Checks of counterfactuals (Monteiro et al. 2023): composition, effectiveness, selectivity.

- Composition: a null edit must give back the image: SSIM / PSNR of the reconstruction vs input.
- Effectiveness: re-encode the counterfactual (encoder + SAE) and check that the target feature moved
  the intended way relative to the re-encoded RECONSTRUCTION (both images went through the same
  generator and resolution, so the comparison isolates the edit).
- Selectivity: the target's share of the total absolute feature change
  ``sum_target |df| / sum_all |df|`` (1 = only the target moved).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSNR_CAP = 100.0  # identical images have infinite PSNR; a finite cap keeps JSON valid


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return float(min(PSNR_CAP, 10.0 * np.log10(1.0 / mse)))


def composition(original: np.ndarray, reconstruction: np.ndarray) -> dict[str, float]:
    return {"ssim": ssim(original, reconstruction), "psnr": psnr(original, reconstruction)}


def feature_effect(before: np.ndarray, after: np.ndarray, targets: Sequence[int], mode: str) -> dict:
    """Effect of one edit on the re-encoded features (``before`` = reconstruction, ``after`` = edit).

    ``moved`` is True when the targets' summed activation went the intended way (down for remove,
    up for add); ``share`` is the selectivity.
    """
    if mode not in ("add", "remove"):
        raise ValueError(f"mode must be add or remove, got {mode!r}")
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    idx = np.asarray(list(targets), dtype=np.int64)
    delta = after - before
    total = float(np.abs(delta).sum())
    target_change = float(np.abs(delta[idx]).sum())
    b, a = float(before[idx].sum()), float(after[idx].sum())
    return {
        "features": [int(i) for i in idx],
        "mode": mode,
        "before": b,
        "after": a,
        "per_feature": {str(int(i)): {"before": float(before[i]), "after": float(after[i])} for i in idx},
        "moved": bool(a < b) if mode == "remove" else bool(a > b),
        "share": target_change / total if total > 0 else 0.0,
        "total_change": total,
    }
