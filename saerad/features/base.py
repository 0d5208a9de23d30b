"""What a describer sees and returns, and the labels a feature's top reports share.

Describers work on batches (``describe_many``) so the LLM one can run calls concurrently and the
extractive one can count the corpus once for all features.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeatureEvidence:
    """Reports behind one feature. ``reports``: of its top-activating images, highest first, one per
    patient (several images of one patient share or repeat a note and would fake agreement).
    ``contrast``: reports of random images where the feature is inactive (for the LLM prompt)."""

    feature_id: int
    reports: tuple[str, ...]
    contrast: tuple[str, ...] = ()


@dataclass(frozen=True)
class Description:
    """A describer's answer for one feature: a short normalised finding statement, or None."""

    feature_id: int
    text: str | None
    info: dict = field(default_factory=dict)  # describer diagnostics (never report text)


class Describer(ABC):
    name: str = "describer"
    needs_contrast: bool = False

    @abstractmethod
    def describe_many(
        self, evidence: Sequence[FeatureEvidence], *, corpus: Sequence[str] = (), progress: bool = False
    ) -> list[Description]:
        """One :class:`Description` per evidence item, in the same order. ``corpus``: the training
        reports, one per study (the background that "over-represented" is measured against)."""

    def config(self) -> dict:
        """JSON-able settings recorded in the dictionary's meta (no secrets)."""
        return {"name": self.name}


def shared_labels(
    label_sets: Sequence[Mapping[str, int | None]], *, min_share: float = 0.6
) -> dict[str, int]:
    """Conditions on which the top reports agree: the most common non-blank value of a condition,
    kept when at least ``min_share`` of ALL the reports carry it (blanks count against it)."""
    if not label_sets:
        return {}
    out: dict[str, int] = {}
    conditions = sorted({c for labels in label_sets for c in labels})
    for cond in conditions:
        votes = Counter(int(v) for labels in label_sets if (v := labels.get(cond)) is not None and v == v)
        if not votes:
            continue
        (value, n), *rest = sorted(votes.items(), key=lambda kv: (-kv[1], -kv[0]))
        if rest and rest[0][1] == n:
            continue  # a tie is no agreement
        if n >= min_share * len(label_sets):
            out[cond] = value
    return out
