"""Clinical-label F1 between generated and reference reports (docs/method.md#evaluation).

Labels are ``(N, 14)`` arrays in :data:`~saerad.radtext.CONDITIONS` order with 1 / 0 / -1 / NaN.
Binarisation: positive -> 1; blank and negative -> 0; uncertain -> 1 ("uncertain_positive", the
convention of f1chexbert/CheXagent) or -> 0 ("uncertain_negative", LLaVA-Rad). Both sides are
binarised the same way. F1 uses zero_division=0: a condition absent from both sides has F1 = 0 and
still counts in the macro mean (as sklearn's ``f1_score(average="macro", zero_division=0)`` does).
Reported: micro and macro over the 14 conditions and over the 5-condition subset, plus
per-condition F1, each with a bootstrap 95% CI.
"""

from __future__ import annotations

import numpy as np

from saerad.eval.bootstrap import resample_weights, with_ci
from saerad.radtext.conditions import CONDITIONS, INDEX_5

CONVENTIONS: dict[str, int] = {"uncertain_positive": 1, "uncertain_negative": 0}


def binarize(labels: np.ndarray, uncertain_as: int) -> np.ndarray:
    """1 / 0 / -1 / NaN -> bool; uncertain becomes ``bool(uncertain_as)``."""
    labels = np.asarray(labels, dtype=np.float64)
    positive = labels == 1
    if uncertain_as:
        positive |= labels == -1
    return positive


def confusion(ref: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """True-positive, false-positive, false-negative counts per condition.

    ``ref``/``pred`` are boolean ``(N, C)``; with ``weights`` ``(B, N)`` (bootstrap draw counts) the
    counts are ``(B, C)``, one row per resample.
    """
    tp = (ref & pred).astype(np.float64)
    fp = (~ref & pred).astype(np.float64)
    fn = (ref & ~pred).astype(np.float64)
    if weights is None:
        return tp.sum(0), fp.sum(0), fn.sum(0)
    return weights @ tp, weights @ fp, weights @ fn


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Element-wise F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0."""
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def _summaries(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Micro/macro over 14 and 5 conditions; works on (C,) or (B, C) counts."""
    per = f1_from_counts(tp, fp, fn)
    idx5 = list(INDEX_5)
    return {
        "micro_14": f1_from_counts(tp.sum(-1), fp.sum(-1), fn.sum(-1)),
        "macro_14": per.mean(-1),
        "micro_5": f1_from_counts(tp[..., idx5].sum(-1), fp[..., idx5].sum(-1), fn[..., idx5].sum(-1)),
        "macro_5": per[..., idx5].mean(-1),
    }


def label_f1(ref_labels: np.ndarray, pred_labels: np.ndarray, uncertain_as: int = 1) -> dict:
    """Point estimates only: ``{"micro_14", "macro_14", "micro_5", "macro_5", "per_condition"}``."""
    ref, pred = binarize(ref_labels, uncertain_as), binarize(pred_labels, uncertain_as)
    tp, fp, fn = confusion(ref, pred)
    out: dict = {k: float(v) for k, v in _summaries(tp, fp, fn).items()}
    out["per_condition"] = dict(zip(CONDITIONS, map(float, f1_from_counts(tp, fp, fn)), strict=True))
    return out


def f1_report(
    ref_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    n_resamples: int = 500,
    seed: int = 0,
) -> dict:
    """Both conventions with bootstrap CIs (``weights`` shared with the other metrics of a run).

    Returns ``{convention: {"micro_14": {"value", "ci95"}, ..., "per_condition": {name: {...}}}}``.
    """
    ref_labels = np.asarray(ref_labels, dtype=np.float64)
    pred_labels = np.asarray(pred_labels, dtype=np.float64)
    if ref_labels.shape != pred_labels.shape or ref_labels.shape[-1] != len(CONDITIONS):
        raise ValueError(f"label arrays must both be (N, {len(CONDITIONS)}), got {ref_labels.shape} and {pred_labels.shape}")
    if weights is None:
        weights = resample_weights(len(ref_labels), n_resamples, seed)
    report: dict = {}
    for name, uncertain_as in CONVENTIONS.items():
        ref, pred = binarize(ref_labels, uncertain_as), binarize(pred_labels, uncertain_as)
        counts = confusion(ref, pred)
        boot_counts = confusion(ref, pred, weights) if len(weights) else None
        point = _summaries(*counts)
        boot = _summaries(*boot_counts) if boot_counts else None
        section = {key: with_ci(point[key], boot[key] if boot else None) for key in point}
        per_point = f1_from_counts(*counts)
        per_boot = f1_from_counts(*boot_counts) if boot_counts else None
        section["per_condition"] = {
            cond: with_ci(per_point[i], per_boot[:, i] if per_boot is not None else None)
            for i, cond in enumerate(CONDITIONS)
        }
        report[name] = section
    return report
