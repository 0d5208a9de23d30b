import json

import pytest

from saerad.errors import BundleError, ConfigError
from saerad.features import FeatureDictionary, UnknownFeatureError, build_dictionary
from saerad.features.base import Describer, Description


@pytest.fixture(scope="module")
def built(synthetic, tiny_sae):
    studies, train, held = synthetic
    return build_dictionary(tiny_sae, train, studies, held_out=held, top_k=8, progress=False)


def test_build_stats_descriptions_and_scores(built, synthetic):
    studies, train, _ = synthetic
    assert len(built) == 5 and built.describer == "extractive"
    f0, f1, f2, f3 = (built.get(i) for i in range(4))
    assert "effusion" in f0.description and f0.usable and f0.description_score > 0.9
    assert f0.labels.get("Pleural Effusion") == 1
    assert ("cardiomegaly" in f1.description or "enlarged" in f1.description) and f1.usable
    assert f2.frequency == 0 and f2.description is None and not f2.usable and f2.top_images == []
    # feature 3 fires at random: either nothing is over-represented or its score is at chance
    assert not f3.usable
    assert set(f0.quantiles) == {"0.5", "0.9", "0.95", "0.99"}
    assert 0 < f0.quantiles["0.5"] <= f0.quantiles["0.99"] <= f0.max_activation
    acts = [t.activation for t in f0.top_images]
    assert acts == sorted(acts, reverse=True) and len(acts) == 8
    by_id = {s.image_ids[0]: s for s in studies}
    assert all(t.report == by_id[t.image_id].findings for t in f0.top_images)
    assert all(t.image_id in train.ids for t in f0.top_images)
    assert built.meta["n_train"] == len(train) and built.meta["scored"]
    assert built.meta["n_dead"] == 1


def test_without_held_out_reports_descriptions_are_unscored(synthetic, tiny_sae):
    studies, train, held = synthetic
    d = build_dictionary(tiny_sae, train, studies, held_out=None, top_k=8, progress=False)
    assert d.get(0).description_score is None and d.get(0).usable
    assert not d.meta["scored"]
    train_only = [s for s in studies if s.image_ids[0] in set(train.ids)]  # held-out images lack reports
    d2 = build_dictionary(tiny_sae, train, train_only, held_out=held, top_k=8, progress=False)
    assert not d2.meta["scored"] and d2.meta["n_held_out"] == 0 and d2.get(0).usable


def test_save_load_roundtrip_and_strip_reports(built, tmp_path):
    path = tmp_path / "sub" / "dictionary.json"
    built.save(path)
    assert FeatureDictionary.load(path) == built
    shipped = built.without_report_text()
    assert all(t.report is None for f in shipped.features for t in f.top_images)
    assert any(t.report for f in built.features for t in f.top_images)  # the original is untouched
    shipped.save(path)
    raw = path.read_text()
    assert all(t["report"] is None for f in json.loads(raw)["features"] for t in f["top_images"])
    assert [p.name for p in path.parent.iterdir()] == ["dictionary.json"]  # no temp files left


def test_load_errors(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        FeatureDictionary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"features": 3}')
    with pytest.raises(BundleError, match="invalid"):
        FeatureDictionary.load(bad)


def test_get_unknown_feature(built):
    with pytest.raises(UnknownFeatureError) as info:
        built.get(99)
    with pytest.raises(UnknownFeatureError):
        built.get("x")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert "99" in str(info.value) and info.value.http_status == 404


def test_search(built):
    hits = built.search("pleural effusion")
    assert hits and hits[0].id == 0
    assert built.search("effus")[0].id == 0
    assert built.search("EFFUSION", limit=1)[0].id == 0
    assert built.search("zebra") == []
    listed = built.search("")
    assert {f.id for f in listed} == {f.id for f in built.features if f.description}
    assert listed[0].usable


class _Fixed(Describer):
    """A stand-in describer: checks the evidence it is handed and answers a fixed text."""

    name = "fixed"
    needs_contrast = True

    def __init__(self):
        self.seen = []

    def describe_many(self, evidence, *, corpus=(), progress=False):
        self.seen = list(evidence)
        return [Description(ev.feature_id, "moderate cardiomegaly" if ev.feature_id == 1 else None) for ev in evidence]


def test_custom_describer_gets_one_report_per_patient_and_contrast(synthetic, tiny_sae):
    studies, train, held = synthetic
    describer = _Fixed()
    d = build_dictionary(tiny_sae, train, studies, describer=describer, held_out=held, top_k=8, progress=False,
                         n_contrast=3)
    by_report = {s.findings: s.patient_id for s in studies}
    for ev in describer.seen:
        patients = [by_report[r] for r in ev.reports]
        assert len(patients) == len(set(patients))
        assert len(ev.contrast) == 3 and not set(ev.contrast) & set(ev.reports)
    assert d.describer == "fixed" and d.get(1).description == "moderate cardiomegaly" and d.get(1).usable
    assert d.get(0).description is None and not d.get(0).usable
    assert 2 not in {ev.feature_id for ev in describer.seen}  # dead features are not described


def test_augmented_views_are_left_out(synthetic, tiny_sae):
    from saerad.encoders.store import EmbeddingSet

    studies, train, _ = synthetic
    aug = EmbeddingSet([f"{i}#aug1" for i in train.ids], train.tokens * 10, encoder=train.encoder)
    both = EmbeddingSet.concat([train, aug])
    d = build_dictionary(tiny_sae, both, studies, top_k=8, progress=False)
    assert d.meta["n_train"] == len(train)
    assert all("#aug" not in t.image_id for f in d.features for t in f.top_images)
