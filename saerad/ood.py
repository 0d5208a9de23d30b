"""Is an image like the ones a bundle was trained on? A distance check calibrated on the bundle itself.

A photograph, a scanned page, noise, a 1 x 1 PNG or a CT slice still gets a class token, and the SAE
still finds features in it: without a check, such an image gets a fluent, normal-looking report.
The check is the Mahalanobis distance of the class token from the bundle's training tokens, with a
Ledoit-Wolf shrunk covariance (Lee et al., "A Simple Unified Framework for Detecting
Out-of-Distribution Samples", NeurIPS 2018; Ledoit & Wolf, J. Multivariate Anal. 2004), so it
needs nothing but those tokens and works for any encoder width, even with fewer images than
dimensions.

The threshold comes from the training patients alone: the distances of each patient's images to a
model fitted without that patient (five patient-grouped folds) estimate how far unseen chest X-rays
of the same kind fall; the threshold is :data:`MARGIN` times their 99th percentile. The margin
leaves room for chest X-rays of other hospitals and scanners, which lie farther than unseen
patients of the training hospital but far nearer than anything that is not a chest X-ray
(``bench/bench_ood.py`` measures both; docs/method.md#out-of-distribution-check).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saerad.errors import BundleError, ConfigError

METHOD = "mahalanobis-ledoit-wolf"
FOLDS = 5
QUANTILE = 0.99
MARGIN = 1.25
WEIGHTS_FILE = "ood.safetensors"
CONFIG_FILE = "ood.json"


@dataclass(frozen=True)
class Assessment:
    """One image against the calibration: its distance, the threshold, and where it falls."""

    distance: float
    threshold: float
    flagged: bool
    training_share_farther: float  # share of the unseen training images (out of fold) at least as far


@dataclass(frozen=True)
class TypicalityCheck:
    """The calibrated check: mean and precision of the training tokens, threshold, reference distances."""

    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d): inverse of the shrunk covariance
    threshold: float
    reference: np.ndarray  # sorted out-of-fold distances of the training images
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, tokens) -> np.ndarray:
        """Mahalanobis distances of raw class tokens ``(B, d)`` (numpy or torch)."""
        x = np.asarray(tokens.detach().cpu().numpy() if hasattr(tokens, "detach") else tokens, dtype=np.float64)
        x = x.reshape(-1, self.dim) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, self.precision, x), 0.0))

    def assess(self, tokens) -> list[Assessment]:
        """One :class:`Assessment` per token."""
        out = []
        for d in self.distances(tokens):
            farther = 1.0 - np.searchsorted(self.reference, d, side="left") / max(1, len(self.reference))
            out.append(Assessment(distance=round(float(d), 4), threshold=round(self.threshold, 4),
                                  flagged=bool(d > self.threshold), training_share_farther=round(float(farther), 4)))
        return out

    # ------------------------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        from saerad.fileio import atomic_path, atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean.astype(np.float64), "precision": self.precision.astype(np.float64),
                   "reference": self.reference.astype(np.float64)}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(directory / CONFIG_FILE, {"method": METHOD, "threshold": self.threshold, **self.meta})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TypicalityCheck:
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
            tensors = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read the out-of-distribution check in {directory}: {exc}") from exc
        if config.get("method") != METHOD:
            raise BundleError(f"{directory}: unknown out-of-distribution method {config.get('method')!r}")
        meta = {k: v for k, v in config.items() if k not in ("method", "threshold")}
        return cls(mean=tensors["mean"], precision=tensors["precision"], threshold=float(config["threshold"]),
                   reference=tensors["reference"], meta=meta)


def shrunk_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, Ledoit-Wolf covariance and shrinkage of rows ``x`` (n, d): the sample covariance pulled
    towards ``mu * I`` by the weight that minimises the expected squared error (Ledoit & Wolf 2004)."""
    n, d = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    sample = xc.T @ xc / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d
    # beta = (1 / n^2) sum_k ||x_k x_k^T - S||_F^2 / d, without forming the n outer products
    sq = (xc**2).sum(axis=1)
    beta = (np.sum(sq**2) / n - np.sum(sample**2)) / (n * d)
    shrinkage = 0.0 if delta <= 0 else float(min(max(beta, 0.0), delta) / delta)
    return mean, (1.0 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    mean, cov, shrinkage = shrunk_covariance(x)
    return mean, np.linalg.pinv(cov, hermitian=True), shrinkage


def _fold(group: str, folds: int) -> int:
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest(), 16) % folds


def calibrate(tokens, groups: Sequence[str], *, folds: int = FOLDS, quantile: float = QUANTILE,
              margin: float = MARGIN, meta: dict[str, Any] | None = None) -> TypicalityCheck:
    """Fit the check on training tokens ``(n, d)`` of patients ``groups`` (one per token).

    Each patient's distances come from a fit without that patient's fold, so the threshold reflects
    unseen patients; the stored mean and precision are then fitted on every token.
    """
    x = np.asarray(tokens.detach().cpu().numpy() if hasattr(tokens, "detach") else tokens, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(groups):
        raise ConfigError("calibration needs one patient id per class token")
    unique = sorted(set(groups))
    if len(x) < 3 or len(unique) < 2:
        raise ConfigError(f"the out-of-distribution check needs the tokens of at least 2 patients and 3 images, "
                          f"got {len(unique)} patient(s) and {len(x)} image(s)")
    k = min(folds, len(unique))
    fold = np.array([_fold(g, k) for g in groups])
    if len(set(fold.tolist())) < 2:  # an unlucky hash on very few patients: assign round-robin instead
        order = {g: i % k for i, g in enumerate(unique)}
        fold = np.array([order[g] for g in groups])
    held_out = np.empty(len(x))
    for f in sorted(set(fold.tolist())):
        inside = fold != f
        mean, precision, _ = _fit(x[inside])
        diff = x[~inside] - mean
        held_out[~inside] = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, precision, diff), 0.0))
    mean, precision, shrinkage = _fit(x)
    threshold = float(margin * np.quantile(held_out, quantile))
    info = {
        "n_images": len(x), "n_patients": len(unique), "folds": k, "quantile": quantile, "margin": margin,
        "shrinkage": round(shrinkage, 6),
        "training_flagged_share": round(float(np.mean(held_out > threshold)), 6),
        **(meta or {}),
    }
    return TypicalityCheck(mean=mean, precision=precision, threshold=threshold, reference=np.sort(held_out), meta=info)


__all__ = ["METHOD", "Assessment", "TypicalityCheck", "calibrate", "shrunk_covariance"]
