"""Percentile bootstrap over studies, done on per-study sufficient statistics.

Every metric here is a function of per-study sums (BLEU n-gram counts, METEOR alignment stats,
F1 confusion counts, per-study ROUGE-L scores), so a resample is a weighted sum: a ``(B, N)`` matrix
of how often each study is drawn times the ``(N, k)`` statistics. One matrix product gives all
500 resamples at once; nothing is re-tokenised and Java is never called again. All metrics of one
run share the same resamples (same seed), so their CIs are comparable.
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 500


def resample_weights(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(n_resamples, n)`` float64 draw counts of a bootstrap with replacement (rows sum to n)."""
    if n <= 0 or n_resamples <= 0:
        return np.zeros((max(n_resamples, 0), max(n, 0)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n)
    return counts.reshape(n_resamples, n).astype(np.float64)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    """``[lo, hi]`` percentile interval of bootstrap ``samples`` (``None`` without samples)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def with_ci(value: float, samples: np.ndarray | None) -> dict:
    """The JSON form of one metric: ``{"value": v, "ci95": [lo, hi] | None}``."""
    return {"value": float(value), "ci95": percentile_ci(samples) if samples is not None else None}
