"""Deterministic composer: dedupe, contradiction handling, anatomical order, feature provenance."""

from __future__ import annotations

import pytest

from saerad.report.anatomy import Region, region_of
from saerad.report.composer import compose, split_statements
from saerad.report.schema import FeatureRef

_KEYWORDS = {
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "opacit": "Lung Opacity",
    "cardiomegaly": "Cardiomegaly",
    "tube": "Support Devices",
    "fracture": "Fracture",
}


def stub_labeler(text: str) -> dict[str, int | None]:
    """A keyword labeller standing in for the rule labeller: 'no' negates, 'possible' hedges."""
    lowered = text.lower()
    value = 0 if lowered.startswith("no ") else -1 if "possible" in lowered else 1
    return {cond: value for key, cond in _KEYWORDS.items() if key in lowered}


def _real_labeler():
    radtext = pytest.importorskip("saerad.radtext")
    if not hasattr(radtext, "label_report"):
        pytest.skip("rule labeller not available yet")
    return radtext.label_report


@pytest.fixture(params=["stub", "rule"])
def labeler(request):
    return stub_labeler if request.param == "stub" else _real_labeler()


def ref(i: int, text: str, activation: float = 1.0) -> FeatureRef:
    return FeatureRef(id=i, activation=activation, description=text)


def test_negative_statement_loses_to_positive_of_same_finding(labeler):
    out = compose([ref(1, "No pleural effusion."), ref(2, "Small right pleural effusion.")], labeler=labeler)
    assert [s.text for s in out.sentences] == ["Small right pleural effusion."]
    assert [f.id for f in out.sentences[0].features] == [2]
    assert any("Pleural Effusion" in n for n in out.notes)


def test_hedged_statement_loses_to_positive(labeler):
    out = compose([ref(1, "Possible left pneumothorax."), ref(2, "Large left pneumothorax.")], labeler=labeler)
    assert [s.text for s in out.sentences] == ["Large left pneumothorax."]


def test_duplicates_merge_and_keep_all_features(labeler):
    out = compose(
        [ref(4, "Cardiomegaly.", 2.0), ref(9, "cardiomegaly", 1.0), ref(7, "No pneumothorax.", 0.5)], labeler=labeler
    )
    texts = [s.text for s in out.sentences]
    assert texts.count("Cardiomegaly.") == 1
    merged = next(s for s in out.sentences if s.text == "Cardiomegaly.")
    assert sorted(f.id for f in merged.features) == [4, 9]
    assert merged.features[0].activation >= merged.features[1].activation


def test_anatomical_order(labeler):
    out = compose(
        [
            ref(1, "Degenerative changes of the thoracic spine."),
            ref(2, "Cardiomegaly."),
            ref(3, "Small left pleural effusion."),
            ref(4, "Patchy opacity in the right lower lobe."),
            ref(5, "Endotracheal tube in standard position."),
            ref(6, "Surgical staples over the abdomen wall skin."),
        ],
        labeler=labeler,
    )
    assert [s.features[0].id for s in out.sentences] == [5, 4, 3, 2, 1, 6]


def test_normal_statement_loses_to_abnormal_in_same_region(labeler):
    out = compose([ref(1, "The lungs are clear."), ref(2, "Patchy opacity in the left lung base.")], labeler=labeler)
    assert [f.id for s in out.sentences for f in s.features] == [2]
    out = compose([ref(1, "The lungs are clear."), ref(2, "Cardiomegaly.")], labeler=labeler)
    assert len(out.sentences) == 2  # different regions do not contradict


def test_undescribed_features_write_nothing_and_text_is_tidied():
    out = compose([ref(1, ""), ref(2, "small left apical pneumothorax")], labeler=stub_labeler)
    assert [s.text for s in out.sentences] == ["Small left apical pneumothorax."]
    assert split_statements("right effusion. no fracture") == ["Right effusion.", "No fracture."]


def test_same_finding_different_location_is_not_merged(labeler):
    out = compose(
        [ref(1, "Opacity in the right upper lobe."), ref(2, "Opacity in the left lower lobe.")], labeler=labeler
    )
    assert len(out.sentences) == 2


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("Right internal jugular catheter tip in the lower lung zone.", Region.DEVICES),
        ("No pleural effusion or pneumothorax.", Region.PLEURA),
        ("Heart size is normal.", Region.HEART_MEDIASTINUM),
        ("Old healed fracture of a left rib.", Region.BONES),
        ("Bibasilar atelectasis.", Region.LUNGS),
        ("Trachea is midline.", Region.HEART_MEDIASTINUM),
        ("Gaseous distension of the stomach.", Region.OTHER),
    ],
)
def test_regions(text, region):
    assert region_of(text) is region


def test_plural_and_more_specific_statements_merge(labeler):
    out = compose(
        [ref(1, "Consolidation."), ref(2, "Consolidations."), ref(3, "Upper lobe consolidation."), ref(4, "Opacities.")],
        labeler=labeler,
    )
    texts = [s.text for s in out.sentences]
    assert "Upper lobe consolidation." in texts and "Consolidation." not in texts and "Consolidations." not in texts
    merged = next(s for s in out.sentences if s.text == "Upper lobe consolidation.")
    assert {f.id for f in merged.features} == {1, 2, 3}
