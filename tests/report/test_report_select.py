"""Feature selection with finding rules: rules speak for their condition, with their voters."""

from __future__ import annotations

import numpy as np

from saerad.features.rules import FindingRule
from saerad.radtext.phrasebook import FINDING_SENTENCES, NORMAL_STATEMENT
from saerad.report.composer import compose
from saerad.report.select import FeatureSelector

EDEMA = FINDING_SENTENCES["Edema"]


def _selector(rules) -> FeatureSelector:
    descriptions = [EDEMA, EDEMA, "Small left pleural effusion.", None, NORMAL_STATEMENT]
    usable = [True, True, True, False, True]
    return FeatureSelector(descriptions, usable, [0.8, 0.7, 0.9, None, 0.7], np.ones(5), rules)


def _rules(threshold: float = 2.0) -> list[FindingRule]:
    return [
        FindingRule(condition="Edema", sentence=EDEMA, weights={0: 1.0, 1: 0.5, 3: 0.25, 4: -0.5}, threshold=threshold,
                    balanced_threshold=threshold + 1.0, positives=40, held_out_auroc=0.8, usable=True),
        FindingRule(condition="No Finding", sentence=NORMAL_STATEMENT, weights={4: 1.0, 0: -0.25}, threshold=1.0,
                    balanced_threshold=1.0, positives=90, held_out_auroc=0.9, usable=True),
    ]


def test_a_rule_writes_its_sentence_with_its_voters():
    selection = _selector(_rules()).select(np.array([1.5, 2.0, 0.0, 4.0, 0.0]))
    assert [r.id for r in selection.chosen] == []  # edema features speak only through the rule
    (fired,) = selection.rules
    assert fired.evidence.evidence == 1.5 + 1.0 + 1.0 and fired.evidence.condition == "Edema"
    assert fired.confidence == fired.evidence.evidence - 3.0
    assert [(v.id, v.contribution) for v in fired.voters] == [(0, 1.5), (1, 1.0), (3, 1.0)]
    composition = compose(selection.chosen, rules=selection.rules)
    (sentence,) = composition.sentences
    assert sentence.text == EDEMA and sentence.rule.threshold == 2.0 and composition.status == "findings"


def test_below_threshold_nothing_and_unusable_rules_leave_features_alone():
    weak = _selector(_rules()).select(np.array([0.5, 0.0, 1.0, 0.0, 0.0]))
    assert weak.rules == [] and [r.id for r in weak.chosen] == [2]
    unused = _rules()
    unused[0].usable = False
    alone = _selector(unused).select(np.array([1.5, 0.0, 0.0, 0.0, 0.0]))
    assert [r.id for r in alone.chosen] == [0] and alone.rules == []


def test_normal_statement_and_nothing_validated():
    normal = _selector(_rules()).select(np.array([0.0, 0.0, 0.0, 0.0, 3.0]))
    assert compose(normal.chosen, rules=normal.rules).status == "normal"
    nothing = _selector(_rules()).select(np.zeros(5))
    assert compose(nothing.chosen, rules=nothing.rules).status == "nothing_validated"


def test_the_more_confident_of_normal_and_finding_rules_wins():
    # edema: 3 - 0.5 * 2 = 2 >= 2 (confidence -1); normal: 2 - 0.25 * 3 = 1.25 >= 1 (confidence 0.25)
    normal_wins = _selector(_rules()).select(np.array([3.0, 0.0, 2.0, 0.0, 2.0]))
    assert [r.evidence.condition for r in normal_wins.rules] == ["No Finding"] and normal_wins.chosen == []
    assert "Edema" in normal_wins.notes[0] and "Small left pleural effusion." in normal_wins.notes[0]
    composed = compose(normal_wins.chosen, rules=normal_wins.rules)
    assert [s.text for s in composed.sentences] == [NORMAL_STATEMENT] and composed.status == "normal"
    # edema: 6 + 2 - 0.5 * 1.5 = 7.25 (confidence 4.25); normal: 1.5 - 0.25 * 6 = 0 < 1: does not fire
    finding_wins = _selector(_rules()).select(np.array([6.0, 4.0, 0.0, 0.0, 1.5]))
    assert [r.evidence.condition for r in finding_wins.rules] == ["Edema"]
    # both fire, the finding is more confident: findings are written, the normal statement is not
    rules = _rules()
    rules[1].weights = {4: 1.0}
    both = _selector(rules).select(np.array([6.0, 4.0, 0.0, 0.0, 1.5]))
    assert [r.evidence.condition for r in both.rules] == ["Edema"] and "more confident" in both.notes[0]
    (edema,) = both.rules
    assert [(v.id, v.contribution) for v in edema.voters] == [(0, 6.0), (1, 2.0), (4, -0.75)]


def test_other_wordings_of_a_ruled_condition_do_not_speak_alone():
    descriptions = ["Pulmonary edema.", "Small left pleural effusion.", "The lungs are clear.", None, "Cardiomegaly."]
    selector = FeatureSelector(descriptions, [True, True, True, False, True], [0.7] * 5, np.ones(5), _rules())
    assert selector.speaks_alone.tolist() == [False, True, False, False, True]
