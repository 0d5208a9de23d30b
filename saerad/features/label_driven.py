"""Label-driven descriptions: which CheXpert condition does a feature's activation track?

Phrase over-representation among 16 top reports fails on small corpora of narrative case notes
(covid-cxr: two of 384 features described). A feature's activation over ALL training images is far
more evidence than its top 16, and the rule labeller already turns every report into condition
labels. So, per feature and condition, we ask: do training reports that state the condition
(positive or uncertain, the convention the evaluation uses) get higher activations than the rest?

- Unit of evidence: one (patient, report text) pair with the feature's MAX activation over its
  images. Case notes are copied onto every image of a patient; counting them per image would fake
  significance. On MIMIC-style data each study is its own unit.
- Tests (:func:`enrichment`): Fisher's exact test of "the feature fires" vs the condition (SAE
  features are sparse) and a tie-corrected Mann-Whitney U of the activations (dense features),
  one-sided, Bonferroni-combined; the rank test is floored at the best p-value the ties allow.
- Multiplicity: Benjamini-Hochberg over every (feature, condition) test run, at false discovery
  rate ``fdr``; features firing on fewer units than ``min_positives`` are left out of the family
  (label-blind). This scales by itself from 200 units (covid-cxr) to 200k (MIMIC); the effect-size
  floor (odds ratio >= ``min_odds_ratio`` or AUROC >= ``min_auroc``) keeps huge corpora from
  describing features by a negligible shift.
- A feature takes its most significant passing condition; its description is a short canonical
  finding statement for it (:data:`CANONICAL`), which the labeller maps back to exactly that
  condition, so the held-out score measures the same thing the test chose. (The extractive
  describer may swap in an over-represented phrase of the top reports that states exactly it.)

Everything is deterministic (no sampling) and costs O(nnz * conditions) after one labelling pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import norm, rankdata

from saerad.radtext.phrasebook import FINDING_SENTENCES

# The description of a feature that tracks a condition: the phrasebook's sentence, which the rule
# labeller maps back to exactly that condition (tests/radtext/test_radtext_phrasebook.py).
CANONICAL: dict[str, str] = FINDING_SENTENCES


@dataclass
class LabelDrivenConfig:
    fdr: float = 0.05  # Benjamini-Hochberg false discovery rate over all (feature, condition) tests
    min_auroc: float = 0.6  # effect-size floor on the training AUROC ...
    min_odds_ratio: float = 2.0  # ... or on the odds ratio of the condition when the feature fires
    min_positives: int = 5  # units needed on each side of a condition, and firing positive units


@dataclass(frozen=True)
class ConditionMatch:
    condition: str
    auroc: float
    pvalue: float
    n_positive: int
    n: int
    odds_ratio: float = float("nan")


def unit_index(keys: Sequence[tuple[str, str] | None]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Map each image's (patient, report text) key to a unit number (-1 for images without a
    report); units are numbered in order of first appearance (deterministic)."""
    units: dict[tuple[str, str], int] = {}
    out = np.full(len(keys), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        if key is not None:
            out[i] = units.setdefault(key, len(units))
    return out, list(units)


def unit_activations(acts, unit_of_row: np.ndarray, n_units: int):
    """CSC ``(n_units, d_sae)``: each unit's maximum activation over its images (rows with unit -1
    are dropped). ``acts``: scipy sparse ``(N, d_sae)`` of non-negative activations."""
    coo = sparse.coo_matrix(acts)
    unit = unit_of_row[coo.row]
    keep = (unit >= 0) & (coo.data > 0)
    unit, col, val = unit[keep], coo.col[keep].astype(np.int64), coo.data[keep]
    d = acts.shape[1]
    if len(val) == 0:
        return sparse.csc_matrix((n_units, d), dtype=np.float32)
    key = unit * d + col
    order = np.argsort(key, kind="stable")
    key, val = key[order], val[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    vmax = np.maximum.reduceat(val, starts)
    k = key[starts]
    return sparse.csc_matrix((vmax, (k // d, k % d)), shape=(n_units, d))


@dataclass(frozen=True)
class Enrichment:
    """Per (feature, condition) arrays, shape ``(d_sae, C)``; NaN where untestable."""

    auroc: np.ndarray  # rank effect size over all units (0.5 = none)
    odds_ratio: np.ndarray  # condition odds when the feature fires vs when it does not (+0.5 each cell)
    active_positives: np.ndarray  # units with the condition on which the feature fires
    pvalue: np.ndarray  # combined one-sided p-value (see :func:`enrichment`)


def enrichment(acts, present: np.ndarray) -> Enrichment:
    """Is each condition more frequent where each feature fires harder? Two one-sided tests:

    - Fisher's exact (hypergeometric) test of "fires" (activation > 0) vs the condition: SAE
      features are sparse (a few % of units), and then *whether* a feature fires is the signal;
    - Mann-Whitney U of the activations (normal approximation, tie-corrected; all zeros tie), which
      sees graded evidence in dense features. The normal approximation is far too optimistic when
      nearly everything ties, so its p-value is floored at the smallest p-value the exact test
      could reach given the ties (one firing positive among 200 units is never "1e-40").

    Combined p = min(1, 2 * min(p_fisher, p_mw)) (Bonferroni over the two tests: valid whichever
    one is chosen). ``acts``: CSC ``(n, d_sae)`` of non-negative activations; ``present``: bool
    ``(n, C)``.
    """
    from scipy.special import gammaln
    from scipy.stats import hypergeom

    acts = sparse.csc_matrix(acts)
    n, d = acts.shape
    y = np.asarray(present, dtype=bool)
    c = y.shape[1]
    n1 = y.sum(0).astype(np.float64)
    n0 = n - n1
    shape = (d, c)
    out = Enrichment(*(np.full(shape, np.nan) for _ in range(4)))
    testable = (n1 > 0) & (n0 > 0)
    if n < 2 or not testable.any():
        return out
    yf = y.astype(np.float64)
    log_total = gammaln(n + 1) - gammaln(n1 + 1) - gammaln(n0 + 1)  # log C(n, n1)
    for f in range(d):
        lo, hi = acts.indptr[f], acts.indptr[f + 1]
        if hi == lo:
            continue  # dead: every unit ties at zero
        rows, vals = acts.indices[lo:hi], acts.data[lo:hi]
        m = len(rows)
        z = n - m
        ranks = rankdata(vals)
        _, counts = np.unique(vals, return_counts=True)
        ties = float(z**3 - z) + float((counts.astype(np.float64) ** 3 - counts).sum())
        pos_nz = yf[rows]  # (m, C)
        k = pos_nz.sum(0)
        rank_sum = (n1 - k) * (z + 1) / 2 + (z + ranks) @ pos_nz
        u = rank_sum - n1 * (n1 + 1) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            var = n1 * n0 / 12 * ((n + 1) - ties / (n * (n - 1)))
            zscore = (u - n1 * n0 / 2 - 0.5) / np.sqrt(var)
            p_mw = np.where(var > 0, norm.sf(zscore), 1.0)
            # most extreme tie-respecting outcome: positives on the top ranks, the rest among zeros
            extra = np.maximum(n1 - m, 0)
            log_best = np.where(
                extra > 0, gammaln(z + 1) - gammaln(extra + 1) - gammaln(np.maximum(z - extra, 0) + 1), 0.0
            )
            p_mw = np.maximum(p_mw, np.exp(log_best - log_total))
            p_fisher = hypergeom.sf(k - 1, n, n1, m)
            odds = ((k + 0.5) * (n0 - (m - k) + 0.5)) / ((m - k + 0.5) * (n1 - k + 0.5))
        p = np.minimum(1.0, 2 * np.minimum(p_fisher, p_mw))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.auroc[f, testable] = (u / (n1 * n0))[testable]
        out.odds_ratio[f, testable] = odds[testable]
        out.active_positives[f, testable] = k[testable]
        out.pvalue[f, testable] = p[testable]
    return out


def benjamini_hochberg(pvalues: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the discoveries at false discovery rate ``q`` (NaN = not tested)."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    tested = np.flatnonzero(~np.isnan(flat))
    out = np.zeros(flat.shape, dtype=bool)
    m = len(tested)
    if m == 0:
        return out.reshape(p.shape)
    order = tested[np.argsort(flat[tested], kind="stable")]
    below = flat[order] <= q * np.arange(1, m + 1) / m
    if below.any():
        last = int(np.flatnonzero(below)[-1])
        out[order[: last + 1]] = True
    return out.reshape(p.shape)


def match_conditions(
    acts, present: np.ndarray, conditions: Sequence[str], cfg: LabelDrivenConfig | None = None
) -> dict[int, ConditionMatch]:
    """Feature id -> the condition it is most significantly enriched for, among those that pass
    the false discovery rate, an effect-size floor (odds ratio or AUROC) and a support floor."""
    cfg = cfg or LabelDrivenConfig()
    y = np.asarray(present, dtype=bool)
    n = y.shape[0]
    n1 = y.sum(0)
    enough = (n1 >= cfg.min_positives) & (n - n1 >= cfg.min_positives)
    y_test = y[:, enough]
    names = [c for c, ok in zip(conditions, enough) if ok]
    if not names:
        return {}
    acts = sparse.csc_matrix(acts)
    e = enrichment(acts, y_test)
    # A feature firing on fewer units than the support floor can never pass: leave it out of the
    # multiple-testing family (a label-blind filter, so the false discovery rate still holds).
    pvalue = np.where((np.diff(acts.indptr) >= cfg.min_positives)[:, None], e.pvalue, np.nan)
    auc = np.nan_to_num(e.auroc, nan=0.0)
    effect = (np.nan_to_num(e.odds_ratio, nan=0.0) >= cfg.min_odds_ratio) | (auc >= cfg.min_auroc)
    support = np.nan_to_num(e.active_positives, nan=0.0) >= cfg.min_positives
    found = benjamini_hochberg(pvalue, cfg.fdr) & effect & support
    out = {}
    for f in np.flatnonzero(found.any(1)):
        cand = np.flatnonzero(found[f])
        # smallest p-value; ties by larger AUROC, then condition order (deterministic)
        j = int(cand[np.lexsort((cand, -auc[f, cand], e.pvalue[f, cand]))[0]])
        out[int(f)] = ConditionMatch(
            names[j], float(e.auroc[f, j]), float(e.pvalue[f, j]), int(n1[enough][j]), n, float(e.odds_ratio[f, j])
        )
    return out


def presence_matrix(label_sets: Sequence[Mapping[str, int | None]], conditions: Sequence[str]) -> np.ndarray:
    """bool ``(len(label_sets), len(conditions))``: positive or uncertain (uncertain = positive, the
    convention of the CheXpert-rule F1 the reports are judged by)."""
    out = np.zeros((len(label_sets), len(conditions)), dtype=bool)
    for i, labels in enumerate(label_sets):
        for j, c in enumerate(conditions):
            v = labels.get(c)
            out[i, j] = v is not None and v == v and int(v) in (1, -1)
    return out
