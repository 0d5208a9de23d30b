"""What one feature does on the user's images: histogram, strongest images, a random sample.

Computed from the sparse activation matrix of the dataset (:func:`saerad.features.stats.sparse_activations`,
~15 non-zeros per image), so a MIMIC-CXR-sized dataset costs megabytes, not the dense N x d_sae matrix.
The random sample is drawn from ALL images, seeded per feature, so the page contrasts what the feature
picks with what the dataset looks like (most sampled images of a sparse feature show activation 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureProfile:
    """One feature on one dataset. Rows index the dataset's image list."""

    id: int
    n_images: int
    n_active: int
    mean_active: float  # mean over active values (0 when never active)
    max: float
    hist_counts: tuple[int, ...]  # active values on ``len(hist_counts)`` equal bins over (0, max]
    top: tuple[tuple[int, float], ...]  # (row, activation), strongest first, active only
    sample: tuple[tuple[int, float], ...]  # (row, activation) of a random sample, strongest first

    @property
    def frequency(self) -> float:
        return self.n_active / self.n_images if self.n_images else 0.0

    @property
    def hist_edges(self) -> np.ndarray:
        return np.linspace(0.0, self.max, len(self.hist_counts) + 1)


def profile_features(
    codes,
    features: Sequence[int],
    *,
    top_k: int = 12,
    sample_k: int = 12,
    bins: int = 24,
    seed: int = 0,
) -> list[FeatureProfile]:
    """Profiles of ``features`` from ``codes``, a scipy sparse ``(n_images, d_sae)`` matrix (CSC is
    fastest). Top images break ties by row order; samples are reproducible per ``(seed, feature)``."""
    codes = codes.tocsc()
    n = codes.shape[0]
    out = []
    for fid in features:
        col = codes.getcol(int(fid))
        rows = col.indices.astype(np.int64)
        vals = col.data.astype(np.float64)
        keep = vals > 0
        rows, vals = rows[keep], vals[keep]
        vmax = float(vals.max()) if len(vals) else 0.0
        counts = np.histogram(vals, bins=bins, range=(0.0, vmax))[0] if len(vals) else np.zeros(bins, np.int64)
        order = np.lexsort((rows, -vals))[:top_k]
        top = tuple((int(rows[i]), float(vals[i])) for i in order)
        rng = np.random.default_rng([seed, int(fid)])
        picked = np.sort(rng.choice(n, size=min(sample_k, n), replace=False)) if n else np.zeros(0, np.int64)
        activation = dict(zip(rows.tolist(), vals.tolist()))
        sample = sorted(((int(r), float(activation.get(int(r), 0.0))) for r in picked), key=lambda rv: (-rv[1], rv[0]))
        out.append(
            FeatureProfile(
                id=int(fid),
                n_images=n,
                n_active=len(vals),
                mean_active=float(vals.mean()) if len(vals) else 0.0,
                max=vmax,
                hist_counts=tuple(int(c) for c in counts),
                top=top,
                sample=tuple(sample),
            )
        )
    return out
