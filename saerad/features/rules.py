"""Finding rules: which features vote for a finding, and how much evidence writes its sentence.

A finding is rarely one feature: on nih-cxr14 the best single feature per condition reaches a
held-out AUROC of 0.6-0.7, while the same condition is spread over a few dozen features that each
carry part of it. So per condition (positive or uncertain labels, the convention reports are scored
by) a rule lets features vote:

    evidence_c(image) = sum_i w_ci * f_i(image),   w_ci >= 0,   the sentence is written when
    evidence_c >= threshold_c.

- Weights: logistic regression of the condition on the features' activations (each scaled by its
  90th active percentile so one penalty suits every feature), class-balanced, with the weights
  constrained to be non-negative and an L1 penalty that leaves a few dozen voters out of hundreds.
  Non-negative weights keep a rule readable: every voter is a feature whose activity argues FOR the
  finding, and a sentence lists the active voters behind it with their contributions.
- Threshold: chosen on out-of-fold scores of the training patients (inner patient-grouped 3-fold
  cross-validation), so the operating point is not fitted on the same images as the weights: the
  best F1 for a finding; for the normal rule ("No Finding"), which gates the whole report (a
  report that states normality states nothing else, :mod:`saerad.report.select`), the balanced
  point (Youden's J: recall on normal images + recall on abnormal ones), because a gate's errors
  cost on both sides. F1-optimal finding thresholds are liberal (they fire on most abnormal images,
  and on many normal ones): the gate is what keeps normal images' reports normal.
- Validation: the held-out patients' AUROC of the evidence, as for single-feature descriptions; a
  rule below :attr:`RuleOptions.min_auroc` or without enough held-out cases is kept in the
  dictionary (for inspection) but not used.

Everything here is deterministic (L-BFGS-B from zeros, fixed folds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit

from saerad.features.scoring import auroc
from saerad.radtext.conditions import NO_FINDING
from saerad.radtext.phrasebook import finding_sentence


class FindingRule(BaseModel):
    """One condition's vote: ``weights`` (feature id -> weight per unit of activation)."""

    condition: str
    sentence: str
    weights: dict[int, float]
    threshold: float
    train_positives: int
    held_out_auroc: float | None = None
    held_out_positives: int = 0
    usable: bool = False

    def evidence(self, activations: np.ndarray) -> float:
        return float(sum(w * float(activations[i]) for i, w in self.weights.items()))

    def voters(self, activations: np.ndarray) -> list[tuple[int, float]]:
        """Active voters of one image as (feature id, contribution), largest first."""
        out = [(i, w * float(activations[i])) for i, w in self.weights.items() if activations[i] > 0]
        return sorted(out, key=lambda t: (-t[1], t[0]))


@dataclass
class RuleOptions:
    penalty: float = 0.01  # L1 strength on scaled activations (mean loss per image is ~0.7 at the start)
    min_train_positives: int = 10  # images with the condition needed to fit a rule
    min_held_out_positives: int = 3  # held-out images needed on each side to validate it
    min_auroc: float = 0.6
    inner_folds: int = 3
    scale_quantile: float = 0.9


def fit_rules(
    train_acts,
    train_present: np.ndarray,
    train_groups: Sequence[str],
    conditions: Sequence[str],
    *,
    held_out_acts=None,
    held_out_present: np.ndarray | None = None,
    options: RuleOptions | None = None,
) -> list[FindingRule]:
    """One rule per condition with enough training positives, validated on the held-out images.

    ``*_acts``: SAE activations ``(N, d_sae)`` (dense or scipy sparse); ``*_present``: bool
    ``(N, C)`` (condition positive or uncertain); ``train_groups``: patient of each training image.
    """
    opts = options or RuleOptions()
    x = sparse.csr_matrix(train_acts, dtype=np.float64)
    scale = _feature_scale(x, opts.scale_quantile)
    xs = x @ sparse.diags(1.0 / scale)
    groups = np.asarray([str(g) for g in train_groups])
    folds = _group_folds(groups, opts.inner_folds)
    held = sparse.csr_matrix(held_out_acts, dtype=np.float64) if held_out_acts is not None else None
    rules = []
    for j, condition in enumerate(conditions):
        y = np.asarray(train_present[:, j], dtype=bool)
        n_pos = int(y.sum())
        if n_pos < opts.min_train_positives or len(y) - n_pos < opts.min_train_positives:
            continue
        w, b = _nonnegative_logistic(xs, y, opts.penalty)
        if not np.any(w > 0):
            continue
        oof = np.zeros(len(y))
        for k in range(opts.inner_folds):
            test = folds == k
            if test.all() or not test.any() or y[~test].all() or not y[~test].any():
                continue
            wk, bk = _nonnegative_logistic(xs[~test], y[~test], opts.penalty)
            oof[test] = xs[test] @ wk + bk
        best = balanced_threshold(oof, y) if condition == NO_FINDING else best_f1_threshold(oof, y)
        cut = best - b  # the same cut on the full model's evidence scale
        weights = {int(i): float(w[i] / scale[i]) for i in np.flatnonzero(w > 0)}
        rule = FindingRule(
            condition=condition,
            sentence=finding_sentence(condition),
            weights=weights,
            threshold=float(cut),
            train_positives=n_pos,
        )
        if held is not None and held_out_present is not None:
            yh = np.asarray(held_out_present[:, j], dtype=bool)
            rule.held_out_positives = int(yh.sum())
            if rule.held_out_positives >= opts.min_held_out_positives and len(yh) - yh.sum() >= opts.min_held_out_positives:
                score = auroc(evidence_of(held, rule), yh)
                rule.held_out_auroc = None if score is None else round(score, 4)
                rule.usable = score is not None and score >= opts.min_auroc
        rules.append(rule)
    return rules


def evidence_of(acts, rule: FindingRule) -> np.ndarray:
    """A rule's evidence for every row of ``acts`` (dense or sparse ``(N, d_sae)``)."""
    ids = np.fromiter(rule.weights, dtype=np.int64)
    w = np.fromiter(rule.weights.values(), dtype=np.float64)
    sub = acts[:, ids]
    return np.asarray(sub @ w).reshape(-1)


def _feature_scale(x: sparse.csr_matrix, q: float) -> np.ndarray:
    """Per feature: the ``q`` quantile of its non-zero activations (1 for a feature never active)."""
    csc = x.tocsc()
    out = np.ones(x.shape[1])
    for f in range(x.shape[1]):
        values = csc.data[csc.indptr[f] : csc.indptr[f + 1]]
        if len(values):
            out[f] = max(float(np.quantile(values, q)), 1e-6)
    return out


def _group_folds(groups: np.ndarray, k: int) -> np.ndarray:
    """Fold of each row: patients dealt round-robin in sorted order (deterministic, grouped)."""
    unique = sorted(set(groups.tolist()))
    fold_of = {g: i % k for i, g in enumerate(unique)}
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def _nonnegative_logistic(x, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """argmin over w >= 0, b of the class-balanced mean log loss + penalty * sum(w)."""
    n, m = x.shape
    pos = max(float(y.mean()), 1e-9)
    sample = np.where(y, 0.5 / pos, 0.5 / max(1.0 - pos, 1e-9)) / n
    yf = y.astype(np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:m], params[m]
        z = x @ w + b
        grad_z = sample * (expit(z) - yf)
        value = float(sample @ (np.logaddexp(0.0, z) - yf * z)) + penalty * float(w.sum())
        return value, np.r_[x.T @ grad_z + penalty, grad_z.sum()]

    result = minimize(loss, np.zeros(m + 1), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None)] * m + [(None, None)], options={"maxiter": 500})
    w = np.where(result.x[:m] > 1e-8, result.x[:m], 0.0)
    return w, float(result.x[m])


def balanced_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The score cut (positives: score >= cut) with the largest recall on positives + on negatives."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order].astype(np.float64)
    tpr = np.cumsum(t) / max(t.sum(), 1.0)
    fpr = np.cumsum(1.0 - t) / max((1.0 - t).sum(), 1.0)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    best = int(np.argmax(np.where(last_of_tie, tpr - fpr, -np.inf)))
    return float(s[best])


def best_f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The score cut with the best F1 (positives: score >= cut) among the observed scores."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order].astype(np.float64)
    tp = np.cumsum(t)
    predicted = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (predicted + t.sum())
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a cut can only fall between distinct scores
    best = int(np.argmax(np.where(last_of_tie, f1, -1.0)))
    return float(s[best])

