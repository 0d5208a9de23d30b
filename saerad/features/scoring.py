"""Does a description hold up on images the dictionary never saw? (docs/method.md#feature-dictionary)

For each held-out image we decide whether its report states the description's finding, then measure
how well the feature's activation ranks those images first: the AUROC (0.5 = chance). "States the
finding" is, in order of trust:

1. the rule labeller agrees: the description's positive/uncertain conditions are positive or
   uncertain in the report (any of them); for a purely negative description ("no pneumothorax") the
   report labels the condition negative; for a normality statement, the report is "No Finding";
2. or the description's normalised statement is one of the report's statements
   (:func:`saerad.features.text.report_keys`: n-grams, clauses, short sentences, negation kept, so
   "pleural effusion" is not found in "no pleural effusion").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from saerad.features.text import Splitter, normalize_statement, report_keys
from saerad.radtext import Labeler

NO_FINDING = "No Finding"
_NORMALITY = re.compile(
    r"\b(normal|clear|unremarkable|within normal limits|no acute|no active|no (?:significant|focal) "
    r"(?:abnormality|abnormalities|disease|process))\b"
)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney AUROC with average ranks for ties (None when a class is empty)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auroc_sparse(n: int, rows: np.ndarray, values: np.ndarray, positive: np.ndarray) -> float | None:
    """:func:`auroc` of a length-``n`` score vector that is zero except ``values`` (> 0) at ``rows``.

    All zeros tie at the bottom (average rank ``(z + 1) / 2``) and every non-zero ranks above them,
    so only the non-zeros need sorting: O(nnz log nnz) per feature instead of O(n log n).
    """
    positive = np.asarray(positive, dtype=bool)
    n1 = int(positive.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return None
    z = n - len(rows)
    pos_nz = positive[rows]
    rank_sum = (n1 - int(pos_nz.sum())) * (z + 1) / 2
    if len(rows):
        rank_sum += float((z + rankdata(values))[pos_nz].sum())
    return float((rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass(frozen=True)
class Target:
    """The finding a description claims: conditions and the report values that count as present."""

    conditions: dict[str, frozenset[int]]
    statement: str

    @classmethod
    def of(cls, description: str, labeler: Labeler) -> Target:
        labels = {c: int(v) for c, v in labeler(description).items() if v is not None and v == v}
        findings = {c: v for c, v in labels.items() if c != NO_FINDING}
        conditions: dict[str, frozenset[int]]
        if any(v in (1, -1) for v in findings.values()):
            conditions = {c: frozenset({1, -1}) for c, v in findings.items() if v in (1, -1)}
        elif findings:
            conditions = {c: frozenset({0}) for c in findings}
        elif labels.get(NO_FINDING) == 1 and _NORMALITY.search(description.lower()):
            conditions = {NO_FINDING: frozenset({1})}
        else:
            conditions = {}
        return cls(conditions, normalize_statement(description))


class HeldOutReports:
    """Labels and statement keys of each held-out image's report, computed once per distinct report
    and indexed (a label matrix, an inverted statement index) so that scoring tens of thousands of
    descriptions costs a few array operations each, not a Python loop over every report."""

    _BLANK = -9

    def __init__(self, texts: Sequence[str], labeler: Labeler, *, splitter: Splitter | None = None) -> None:
        cache: dict[str, tuple[dict[str, int], frozenset[str]]] = {}
        per_image = []
        for text in texts:
            hit = cache.get(text)
            if hit is None:
                labels = {c: int(v) for c, v in labeler(text).items() if v is not None and v == v}
                hit = (labels, report_keys(text, splitter=splitter))
                cache[text] = hit
            per_image.append(hit)
        self.n = len(per_image)
        self.conditions = sorted({c for labels, _ in per_image for c in labels})
        col = {c: j for j, c in enumerate(self.conditions)}
        self.label_matrix = np.full((self.n, len(self.conditions)), self._BLANK, dtype=np.int8)
        self.rows_of: dict[str, list[int]] = {}
        for i, (labels, keys) in enumerate(per_image):
            for c, v in labels.items():
                self.label_matrix[i, col[c]] = v
            for k in keys:
                self.rows_of.setdefault(k, []).append(i)
        self._col = col

    def __len__(self) -> int:
        return self.n

    def presence(self, target: Target) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for c, ok in target.conditions.items():
            j = self._col.get(c)
            if j is not None:
                out |= np.isin(self.label_matrix[:, j], list(ok))
        rows = self.rows_of.get(target.statement)
        if rows:
            out[rows] = True
        return out


@dataclass(frozen=True)
class Score:
    auroc: float | None
    n_positive: int
    n: int


def score_descriptions(
    descriptions: Mapping[int, str],
    activations,
    reports: HeldOutReports,
    labeler: Labeler,
    *,
    min_positives: int = 3,
) -> dict[int, Score]:
    """AUROC per described feature. ``activations``: scipy CSC ``(len(reports), d_sae)``. A score
    needs ``min_positives`` images on each side; with fewer it is None (too little evidence)."""
    n = len(reports)
    presence_cache: dict[str, np.ndarray] = {}
    out = {}
    for fid, text in descriptions.items():
        present = presence_cache.get(text)
        if present is None:
            present = reports.presence(Target.of(text, labeler))
            presence_cache[text] = present
        n_pos = int(present.sum())
        if n_pos < min_positives or n - n_pos < min_positives:
            out[fid] = Score(None, n_pos, n)
            continue
        col = activations[:, fid]
        out[fid] = Score(auroc_sparse(n, col.indices, col.data, present), n_pos, n)
    return out
