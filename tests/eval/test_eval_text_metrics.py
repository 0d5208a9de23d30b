"""Text metrics agree with pycocoevalcap / the METEOR jar; bootstrap on sufficient statistics."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.eval.bootstrap import resample_weights
from saerad.eval.meteor import meteor_unavailable_reason
from saerad.eval.text_metrics import bleu_from_sums, bleu_pair_stats, pair_stats, text_metrics
from saerad.radtext.text import normalize_report

# Pairs written for the test in report language (hypothesis, reference).
PAIRS = [
    ("The heart size is normal. The lungs are clear.", "Heart size is normal. Lungs are clear without effusion."),
    ("Small left pleural effusion with adjacent atelectasis.", "Small left effusion and basilar atelectasis."),
    ("No pneumothorax.", "There is a small right apical pneumothorax."),
    ("Moderate cardiomegaly with mild pulmonary edema.", "Moderate cardiomegaly with mild pulmonary edema."),
    ("", "Endotracheal tube terminates above the carina."),
    ("Right lower lobe opacity may represent pneumonia.", "Right lower lobe consolidation consistent with pneumonia."),
]
HYPS = [normalize_report(h) for h, _ in PAIRS]
REFS = [normalize_report(r) for _, r in PAIRS]


def test_bleu_matches_pycocoevalcap() -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    expected, per = Bleu(4).compute_score({i: [r] for i, r in enumerate(REFS)}, {i: [h] for i, h in enumerate(HYPS)}, verbose=0)
    stats = bleu_pair_stats(HYPS, REFS)
    assert bleu_from_sums(stats.sum(0)) == pytest.approx(expected, rel=1e-12)
    assert bleu_from_sums(stats)[:, 3] == pytest.approx(per[3], rel=1e-9)


def test_rouge_matches_pycocoevalcap_and_bootstrap_weights() -> None:
    from pycocoevalcap.rouge.rouge import Rouge

    stats = pair_stats(HYPS, REFS, meteor=None, meteor_reason="off", normalized=True)
    nonempty = [i for i, h in enumerate(HYPS) if h]
    expected = [Rouge().calc_score([HYPS[i]], [REFS[i]]) for i in nonempty]
    assert stats.rouge_l[nonempty] == pytest.approx(expected)
    assert stats.rouge_l[4] == 0.0
    assert stats.rouge_score_l[3] == pytest.approx(1.0)
    weights = resample_weights(len(PAIRS), 100, seed=0)
    metrics = text_metrics(stats, weights)
    assert metrics["METEOR"] == {"unavailable": "off"}
    assert metrics["ROUGE-L"]["value"] == pytest.approx(stats.rouge_l.mean())
    lo, hi = metrics["BLEU-4"]["ci95"]
    assert lo <= metrics["BLEU-4"]["value"] <= hi
    # a resample that draws every pair once reproduces the point estimate
    ones = np.ones((1, len(PAIRS)))
    assert bleu_from_sums(ones @ stats.bleu)[0] == pytest.approx([metrics[f"BLEU-{k}"]["value"] for k in range(1, 5)])


def test_meteor_unavailable_reason() -> None:
    reason = meteor_unavailable_reason("no-such-java-binary")
    assert reason is not None and "Java" in reason


@pytest.mark.slow
@pytest.mark.skipif(meteor_unavailable_reason() is not None, reason="no Java runtime for METEOR")
def test_meteor_python_aggregate_equals_java_eval() -> None:
    """Bootstrap resamples are scored in Python: that must equal the jar's own EVAL."""
    from saerad.eval.meteor import MeteorJava, meteor_from_stats, meteor_from_weighted

    with MeteorJava() as meteor:
        stats = meteor.stats(HYPS, REFS)
        segments, corpus = meteor.evaluate(stats)
        resampled = stats[[0, 0, 1, 3, 3, 3, 5]]
        _, corpus_resampled = meteor.evaluate(resampled)
    assert stats.shape == (len(PAIRS), 23)
    assert meteor_from_stats(stats) == pytest.approx(corpus, abs=1e-12)
    assert [float(meteor_from_stats(s[None])) for s in stats] == pytest.approx(segments, abs=1e-12)
    weights = np.array([[2, 1, 0, 3, 0, 1]], dtype=float)
    assert meteor_from_weighted(stats, weights)[0] == pytest.approx(corpus_resampled, abs=1e-12)
    assert segments[3] > 0.99 and segments[4] == 0.0  # identical pair; empty hypothesis
