"""Finding rules: non-negative sparse votes recover the features that carry a condition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from saerad.features.rules import (
    FindingRule,
    RuleOptions,
    balanced_threshold,
    best_f1_threshold,
    evidence_of,
    fit_rules,
)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """20 sparse features; the condition is present when features 3 and 7 together are strong."""
    rng = np.random.default_rng(seed)
    acts = np.where(rng.random((n, 20)) < 0.3, rng.gamma(2.0, 1.0, (n, 20)), 0.0)
    signal = acts[:, 3] + acts[:, 7] + rng.normal(0, 0.5, n)
    present = np.stack([signal > 2.5, rng.random(n) < 0.3], axis=1)  # a real condition and pure noise
    return acts, present


def test_rule_finds_its_voters_and_holds_up_out_of_fold():
    acts, present = _data(600, 0)
    groups = [f"p{i // 2}" for i in range(600)]
    rules = fit_rules(sparse.csr_matrix(acts), present, groups, ["Edema", "Fracture"])
    edema = next(r for r in rules if r.condition == "Edema")
    assert edema.sentence == "There is pulmonary edema."
    assert edema.balanced_threshold != edema.threshold or edema.condition == "No Finding"
    top_two = sorted(edema.weights, key=lambda i: -edema.weights[i])[:2]
    assert sorted(top_two) == [3, 7]
    assert edema.held_out_auroc > 0.85 and edema.usable and edema.positives == int(present[:, 0].sum())
    noise = [r for r in rules if r.condition == "Fracture"]
    assert not noise or not noise[0].usable  # a condition the features do not carry is not used
    # on new images the shipped rule separates the condition as well as out of fold
    held, held_present = _data(300, 1)
    scores = evidence_of(held, edema)
    assert np.allclose(scores[:5], [edema.evidence(row) for row in held[:5]])
    fired = scores >= edema.threshold
    assert fired[held_present[:, 0]].mean() > 0.7 and fired[~held_present[:, 0]].mean() < 0.3


def test_too_few_positives_fit_no_rule_and_a_lone_voter_is_listed():
    acts, present = _data(200, 2)
    present[:, 0] = False
    present[:3, 0] = True
    assert fit_rules(acts, present[:, :1], [str(i) for i in range(200)], ["Edema"]) == []
    rule = FindingRule(condition="Edema", sentence="s", weights={3: 2.0, 7: 1.0, 9: -0.5}, threshold=1.0,
                       balanced_threshold=1.5, positives=9)
    row = np.zeros(20)
    row[7], row[9] = 4.0, 2.0
    assert rule.voters(row) == [(7, 4.0), (9, -1.0)] and rule.evidence(row) == 3.0 and rule.confidence(3.0) == 1.5


def testbest_f1_threshold_cuts_between_distinct_scores():
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.0])
    y = np.array([True, True, False, False, False])
    assert best_f1_threshold(scores, y) == pytest.approx(0.8)  # ties cannot be split
    assert best_f1_threshold(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 3.0
    assert RuleOptions().min_auroc == 0.6
    # balanced: recall 2/2 on positives and 2/3 on negatives at 0.8 beats 1/2 and 3/3 at 0.9
    assert balanced_threshold(np.array([0.9, 0.85, 0.8, 0.1, 0.0]), np.array([True, False, True, False, False])) == 0.8
