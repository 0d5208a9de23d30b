"""Which SAE features of one image speak in its report.

Every feature with activation above ``threshold`` is *active* and listed in the report. Findings are
written from the active features that are *usable* (described, alive, description score above
chance; see the dictionary), ranked by their contribution to the class token, ``f_i * ||W_dec[i]||``:
without a decoder-norm constraint the raw activation alone says little about how much of the image
representation a feature carries. ``top_k`` keeps the ``k`` largest contributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saerad.report.schema import FeatureRef


@dataclass(frozen=True)
class Selection:
    active: list[FeatureRef]  # every active feature, by contribution (largest first)
    chosen: list[FeatureRef]  # the ones findings are written from, same order


class FeatureSelector:
    """Precomputed per-feature facts (description, usability, decoder norm) for fast selection."""

    def __init__(
        self,
        descriptions: Sequence[str | None],
        usable: Sequence[bool],
        scores: Sequence[float | None],
        decoder_norms: np.ndarray,
    ) -> None:
        n = len(descriptions)
        if not (len(usable) == len(scores) == n == len(decoder_norms)):
            raise ValueError("descriptions, usable, scores and decoder norms must have one entry per feature")
        self.descriptions = [d or "" for d in descriptions]
        self.usable = np.asarray(usable, dtype=bool)
        self.scores = list(scores)
        self.decoder_norms = np.asarray(decoder_norms, dtype=np.float64)

    @classmethod
    def from_parts(cls, dictionary, sae) -> FeatureSelector:
        """From a ``FeatureDictionary`` and a ``GatedSAE`` (decoder rows are feature directions)."""
        feats = sorted(dictionary.features, key=lambda f: f.id)
        norms = sae.W_dec.detach().float().norm(dim=1).cpu().numpy()
        return cls(
            [f.description for f in feats],
            [bool(f.usable and f.description) for f in feats],
            [f.description_score for f in feats],
            norms,
        )

    def select(
        self,
        activations: np.ndarray,
        *,
        top_k: int | None = None,
        threshold: float = 0.0,
        usable_only: bool = True,
    ) -> Selection:
        """Rank one image's features ``activations`` (shape ``(d_sae,)``)."""
        f = np.asarray(activations, dtype=np.float64).reshape(-1)
        if f.shape[0] != self.decoder_norms.shape[0]:
            raise ValueError(f"expected {self.decoder_norms.shape[0]} activations, got {f.shape[0]}")
        idx = np.flatnonzero(f > threshold)
        contribution = f[idx] * self.decoder_norms[idx]
        idx = idx[np.lexsort((idx, -contribution))]  # largest contribution first, ties by id
        active = [self.ref(int(i), float(f[i])) for i in idx]
        chosen = [r for r in active if r.usable] if usable_only else [r for r in active if r.description]
        if top_k is not None:
            chosen = chosen[: max(0, top_k)]
        return Selection(active=active, chosen=chosen)

    def ref(self, i: int, activation: float) -> FeatureRef:
        return FeatureRef(
            id=i,
            activation=round(activation, 6),
            description=self.descriptions[i],
            score=self.scores[i],
            usable=bool(self.usable[i]),
        )
