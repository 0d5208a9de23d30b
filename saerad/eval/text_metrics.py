"""BLEU-1..4, METEOR 1.5 and ROUGE-L as coco-caption computes them, plus rouge-score's ROUGE-L F1.

All texts pass through :func:`saerad.radtext.normalize_report` first (lower case, PTB-style tokens,
punctuation removed) - the one documented normalisation. Then, per (hypothesis, reference) pair:

* BLEU: pycocoevalcap's own ``cook_refs``/``cook_test`` give n-gram match counts and lengths;
  corpus BLEU is computed from their sums with pycocoevalcap's formula ("closest" reference length,
  which with one reference is the reference length; its tiny/small smoothing constants).
* ROUGE-L: ``pycocoevalcap.rouge.Rouge.calc_score`` per pair (LCS F-measure, beta 1.2), averaged.
* ROUGE-L (rouge-score): ``rouge_score``'s ``rougeL`` F1 per pair (no stemming), averaged - the
  variant several report-generation papers quote.
* METEOR: per-pair statistics from the METEOR 1.5 jar (:mod:`saerad.eval.meteor`); the corpus
  score is Java's EVAL over all pairs.

Bootstrap CIs resample the per-pair statistics (:mod:`saerad.eval.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saerad.errors import ConfigError
from saerad.eval.bootstrap import with_ci
from saerad.radtext.text import normalize_report

BLEU_N = 4
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap BleuScorer constants

TEXT_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "ROUGE-L (rouge-score)")


@dataclass
class PairStats:
    """Per-pair sufficient statistics of one system's reports against the references."""

    bleu: np.ndarray  # (N, 2 + 2n): testlen, reflen, guess_1..n, correct_1..n
    rouge_l: np.ndarray  # (N,) pycocoevalcap ROUGE-L per pair
    rouge_score_l: np.ndarray  # (N,) rouge-score ROUGE-L F1 per pair
    meteor: np.ndarray | None = None  # (N, 23) METEOR 1.5 statistics
    meteor_segments: np.ndarray | None = None  # (N,) Java's per-pair METEOR
    meteor_corpus: float | None = None  # Java's corpus METEOR
    meteor_reason: str | None = None  # why METEOR is missing

    def __len__(self) -> int:
        return len(self.rouge_l)


def bleu_pair_stats(hypotheses: Sequence[str], references: Sequence[str], n: int = BLEU_N) -> np.ndarray:
    """``(N, 2 + 2n)`` BLEU statistics of normalised texts, via pycocoevalcap's cooking functions."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    out = np.zeros((len(hypotheses), 2 + 2 * n), dtype=np.float64)
    for row, (hyp, ref) in enumerate(zip(hypotheses, references, strict=True)):
        cooked = cook_test(hyp, cook_refs([ref], n=n), n=n)
        reflen = cooked["reflen"]
        out[row, 0] = cooked["testlen"]
        out[row, 1] = reflen[0] if isinstance(reflen, list) else reflen
        out[row, 2 : 2 + n] = cooked["guess"]
        out[row, 2 + n :] = cooked["correct"]
    return out


def bleu_from_sums(sums: np.ndarray, n: int = BLEU_N) -> np.ndarray:
    """Corpus BLEU-1..n from summed statistics ``(..., 2 + 2n)`` -> ``(..., n)`` (pycocoevalcap formula)."""
    sums = np.asarray(sums, dtype=np.float64)
    testlen, reflen = sums[..., 0], sums[..., 1]
    guess, correct = sums[..., 2 : 2 + n], sums[..., 2 + n :]
    log_p = np.log((correct + _TINY) / (guess + _SMALL))
    cumulative = np.cumsum(log_p, axis=-1)
    bleus = np.exp(cumulative / np.arange(1, n + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * brevity[..., None]


def rouge_l_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """pycocoevalcap ROUGE-L per pair (empty hypothesis -> 0)."""
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    return np.array(
        [scorer.calc_score([hyp], [ref]) if hyp and ref else 0.0 for hyp, ref in zip(hypotheses, references, strict=True)],
        dtype=np.float64,
    )


def rouge_score_l_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """rouge-score ``rougeL`` F1 per pair (target = reference, prediction = hypothesis)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)],
        dtype=np.float64,
    )


def pair_stats(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    meteor=None,
    meteor_reason: str | None = None,
    normalized: bool = False,
    meteor_future=None,
) -> PairStats:
    """Statistics of one system. ``meteor`` is a running :class:`~saerad.eval.meteor.MeteorJava`
    (shared by every system of a run) or ``None`` with ``meteor_reason`` saying why. METEOR runs
    in a background thread while Python computes BLEU and ROUGE (Java and Python use one core each)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    hyps = list(hypotheses) if normalized else [normalize_report(t) for t in hypotheses]
    refs = list(references) if normalized else [normalize_report(t) for t in references]
    pending = meteor_future or (meteor.submit(hyps, refs) if meteor is not None else None)
    stats = PairStats(
        bleu=bleu_pair_stats(hyps, refs),
        rouge_l=rouge_l_pairs(hyps, refs),
        rouge_score_l=rouge_score_l_pairs(hyps, refs),
        meteor_reason=meteor_reason if pending is None else None,
    )
    if pending is not None:
        try:
            stats.meteor, stats.meteor_segments, stats.meteor_corpus = pending.result()
        except (ConfigError, OSError) as exc:  # Java died mid-run: keep the other metrics
            stats.meteor_reason = f"METEOR failed: {exc}"
    elif meteor_reason is None:
        stats.meteor_reason = "not requested"
    return stats


def text_metrics(stats: PairStats, weights: np.ndarray) -> dict[str, dict]:
    """Every text metric with its bootstrap CI: ``{name: {"value", "ci95"}}`` or ``{"unavailable": why}``."""
    from saerad.eval.meteor import meteor_from_stats, meteor_from_weighted

    have_boot = len(weights) > 0 and len(stats) > 0
    out: dict[str, dict] = {}
    bleu = bleu_from_sums(stats.bleu.sum(0))
    bleu_boot = bleu_from_sums(weights @ stats.bleu) if have_boot else None
    for k in range(BLEU_N):
        out[f"BLEU-{k + 1}"] = with_ci(bleu[k], bleu_boot[:, k] if bleu_boot is not None else None)
    if stats.meteor is not None:
        value = stats.meteor_corpus if stats.meteor_corpus is not None else float(meteor_from_stats(stats.meteor))
        out["METEOR"] = with_ci(value, meteor_from_weighted(stats.meteor, weights) if have_boot else None)
    else:
        out["METEOR"] = {"unavailable": stats.meteor_reason or "not computed"}
    n = max(len(stats), 1)
    for name, per_pair in (("ROUGE-L", stats.rouge_l), ("ROUGE-L (rouge-score)", stats.rouge_score_l)):
        value = float(per_pair.mean()) if len(per_pair) else 0.0
        out[name] = with_ci(value, (weights @ per_pair) / n if have_boot else None)
    return out


def per_pair_scores(stats: PairStats) -> list[dict[str, float | None]]:
    """Per-study numbers for the predictions file (sentence-level BLEU-4 with pycocoevalcap's smoothing)."""
    per_bleu = bleu_from_sums(stats.bleu)[:, BLEU_N - 1]
    rows = []
    for i in range(len(stats)):
        rows.append(
            {
                "BLEU-4": _finite(per_bleu[i]),
                "METEOR": _finite(stats.meteor_segments[i]) if stats.meteor_segments is not None else None,
                "ROUGE-L": _finite(stats.rouge_l[i]),
                "ROUGE-L (rouge-score)": _finite(stats.rouge_score_l[i]),
            }
        )
    return rows


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
