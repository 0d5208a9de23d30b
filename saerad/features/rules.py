"""Finding rules: which features vote for a finding, and how much evidence writes its sentence.

A finding is rarely one feature: on nih-cxr14 the best single feature per condition reaches a
held-out AUROC of 0.6-0.7, while the same condition is spread over a few dozen features that each
carry part of it. So per condition (positive or uncertain labels, the convention reports are scored
by) a rule lets features vote:

    evidence_c(image) = sum_i w_ci * f_i(image),   the sentence is written when evidence_c >= threshold_c.

- Weights: logistic regression of the condition on the features' activations (each scaled by its
  90th active percentile so one penalty suits every feature), class-balanced, with an L1 penalty
  that leaves a few dozen voters out of hundreds. A voter with a positive weight argues for the
  finding, one with a negative weight against it ("this looks like a well-expanded, clear lung");
  a sentence lists every active voter with its signed contribution, so the arithmetic behind it
  can be read off the report. (Votes restricted to non-negative weights were tried: on nih-cxr14
  they lose a third of what the features know about normality, out-of-fold AUROC 0.77 against
  0.83 with signed weights and 0.87 for all features.)
- Validation and threshold come from one patient-grouped cross-validation over every image the
  dictionary may learn from (training and held-out patients): each patient is scored by a rule
  fitted without them, so the out-of-fold scores are held-out scores, and all of them count (a
  single 15 % held-out split leaves a handful of positives per condition: too few to tell a rule
  from chance). ``held_out_auroc`` is the AUROC of those out-of-fold scores; a rule below
  :attr:`RuleOptions.min_auroc` or with too few positives is kept in the dictionary (for
  inspection) but not used. The operating point is the out-of-fold score cut with the best F1 for
  a finding; for the normal rule ("No Finding"), which gates the whole report (a report that
  states normality states nothing else, :mod:`saerad.report.select`), the balanced point (Youden's
  J: recall on normal images + recall on abnormal ones), because a gate's errors cost on both
  sides. F1-optimal finding thresholds are liberal (they fire on most abnormal images, and on many
  normal ones): the gate is what keeps normal images' reports normal. The weights that are shipped
  are refitted on all the images.

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
    threshold: float  # evidence needed to write the sentence
    balanced_threshold: float  # where the rule errs equally on both sides: rules' confidences are compared from here
    positives: int  # images with the condition among those the rule was fitted and validated on
    held_out_auroc: float | None = None  # of the out-of-fold scores (patients scored without being fitted on)
    usable: bool = False

    def evidence(self, activations: np.ndarray) -> float:
        return float(sum(w * float(activations[i]) for i, w in self.weights.items()))

    def voters(self, activations: np.ndarray) -> list[tuple[int, float]]:
        """Active voters of one image as (feature id, signed contribution), largest first."""
        out = [(i, w * float(activations[i])) for i, w in self.weights.items() if activations[i] > 0]
        return sorted(out, key=lambda t: (-t[1], t[0]))

    def confidence(self, evidence: float) -> float:
        """Evidence above the balanced cut, in the logit units every rule shares (class-balanced
        logistic votes): how the normal rule and the finding rules are weighed against each other."""
        return evidence - self.balanced_threshold


@dataclass
class RuleOptions:
    penalty: float = 0.005  # L1 strength on scaled activations (mean loss per image is ~0.7 at the start)
    min_positives: int = 10  # images with (and without) the condition needed to fit a rule
    min_auroc: float = 0.6
    folds: int = 5
    scale_quantile: float = 0.9


def fit_rules(
    acts,
    present: np.ndarray,
    groups: Sequence[str],
    conditions: Sequence[str],
    *,
    options: RuleOptions | None = None,
) -> list[FindingRule]:
    """One cross-validated rule per condition with enough positives (see the module docstring).

    ``acts``: SAE activations ``(N, d_sae)`` (dense or scipy sparse); ``present``: bool ``(N, C)``
    (condition positive or uncertain); ``groups``: the patient of each image.
    """
    opts = options or RuleOptions()
    x = sparse.csr_matrix(acts, dtype=np.float64)
    scale = _feature_scale(x, opts.scale_quantile)
    xs = x @ sparse.diags(1.0 / scale)
    folds = _group_folds(np.asarray([str(g) for g in groups]), opts.folds)
    rules = []
    for j, condition in enumerate(conditions):
        y = np.asarray(present[:, j], dtype=bool)
        n_pos = int(y.sum())
        if n_pos < opts.min_positives or len(y) - n_pos < opts.min_positives:
            continue
        w, b = _sparse_logistic(xs, y, opts.penalty)
        if not np.any(w > 0):
            continue
        oof = np.full(len(y), np.nan)
        for k in range(opts.folds):
            test = folds == k
            if not test.any() or y[~test].all() or not y[~test].any():
                continue
            wk, bk = _sparse_logistic(xs[~test], y[~test], opts.penalty)
            oof[test] = xs[test] @ wk + bk
        scored = ~np.isnan(oof)
        # cuts on the out-of-fold scale, moved to the full model's evidence scale (its intercept)
        balanced = balanced_threshold(oof[scored], y[scored]) - b
        cut = balanced if condition == NO_FINDING else best_f1_threshold(oof[scored], y[scored]) - b
        score = auroc(oof[scored], y[scored])
        rules.append(FindingRule(
            condition=condition,
            sentence=finding_sentence(condition),
            weights={int(i): float(w[i] / scale[i]) for i in np.flatnonzero(w)},
            threshold=float(cut),
            balanced_threshold=float(balanced),
            positives=n_pos,
            held_out_auroc=None if score is None else round(score, 4),
            usable=score is not None and score >= opts.min_auroc,
        ))
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


def _sparse_logistic(x, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """argmin over w, b of the class-balanced mean log loss + penalty * ||w||_1.

    The L1 term is made smooth by the usual split w = u - v with u, v >= 0 (L-BFGS-B with bounds).
    """
    n, m = x.shape
    pos = max(float(y.mean()), 1e-9)
    sample = np.where(y, 0.5 / pos, 0.5 / max(1.0 - pos, 1e-9)) / n
    yf = y.astype(np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:m] - params[m : 2 * m], params[2 * m]
        z = x @ w + b
        grad_z = sample * (expit(z) - yf)
        grad_w = x.T @ grad_z
        value = float(sample @ (np.logaddexp(0.0, z) - yf * z)) + penalty * float(params[: 2 * m].sum())
        return value, np.r_[grad_w + penalty, -grad_w + penalty, grad_z.sum()]

    result = minimize(loss, np.zeros(2 * m + 1), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None)] * (2 * m) + [(None, None)], options={"maxiter": 1000})
    w = result.x[:m] - result.x[m : 2 * m]
    w[np.abs(w) < 1e-8] = 0.0
    return w, float(result.x[2 * m])


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

