"""Every phrasebook sentence reads back, through the rule labeller, as exactly its finding."""

from __future__ import annotations

import pytest

from saerad.radtext import label_report
from saerad.radtext.conditions import CONDITIONS, NO_FINDING, SUPPORT_DEVICES
from saerad.radtext.phrasebook import FINDING_SENTENCES, NORMAL_STATEMENT, findings_text


def _asserted(text: str) -> dict[str, int]:
    return {c: int(v) for c, v in label_report(text).items() if v is not None and v == v}


@pytest.mark.parametrize("condition", CONDITIONS)
def test_each_sentence_states_only_its_condition(condition: str) -> None:
    labels = _asserted(FINDING_SENTENCES[condition])
    expected = {condition: 1}
    if condition == SUPPORT_DEVICES:  # devices alone still leave the study without a finding
        expected[NO_FINDING] = 1
    assert labels == expected


def test_template() -> None:
    assert findings_text(set()) == NORMAL_STATEMENT
    text = findings_text({"Pleural Effusion", "Edema", "Emphysema"})
    assert text == "There is pulmonary edema. There is a pleural effusion. There is emphysema."
    assert _asserted("There is emphysema.") == {}  # another abnormality: blocks No Finding
    with pytest.raises(KeyError, match="Sarcoidosis"):
        findings_text({"Sarcoidosis"})
