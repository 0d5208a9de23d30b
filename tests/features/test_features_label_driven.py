"""The label-driven description path: a feature whose activation tracks a labeller condition over
all training reports is described by that condition; noise is described by nothing usable."""


import numpy as np
import pytest
import torch
from scipy import sparse

from saerad.encoders.store import EmbeddingSet
from saerad.features.annotate import build_dictionary
from saerad.features.label_driven import (
    benjamini_hochberg,
    enrichment,
    match_conditions,
    unit_activations,
    unit_index,
)
from saerad.radtext import label_report


def test_units_take_the_max_over_images_of_one_patient_note():
    keys = [("p1", "a"), ("p1", "a"), None, ("p2", "a"), ("p1", "b")]
    unit, units = unit_index(keys)
    assert unit.tolist() == [0, 0, -1, 1, 2] and units == [("p1", "a"), ("p2", "a"), ("p1", "b")]
    acts = sparse.csr_matrix(np.array([[1.0, 0], [3.0, 0], [9.0, 9.0], [0, 2.0], [0, 0]]))
    out = unit_activations(acts, unit, len(units)).toarray()
    assert out.tolist() == [[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]]


def test_sparse_ties_do_not_fake_significance():
    # one firing unit out of 200, and it has the condition: the exact chance is 1 in 200, not 1e-40
    acts = sparse.csc_matrix(np.r_[1.0, np.zeros(199)][:, None])
    present = np.zeros((200, 1), dtype=bool)
    present[0] = True
    e = enrichment(acts, present)
    assert e.pvalue[0, 0] >= 1 / 200
    assert e.auroc[0, 0] == pytest.approx(1.0)


def test_benjamini_hochberg():
    p = np.array([[0.001, 0.02], [0.04, np.nan]])
    assert benjamini_hochberg(p, 0.05).tolist() == [[True, True], [True, False]]
    assert benjamini_hochberg(p, 0.01).tolist() == [[True, False], [False, False]]


def test_match_picks_the_enriched_condition_and_rejects_noise():
    rng = np.random.default_rng(0)
    n = 400
    present = np.c_[rng.random(n) < 0.3, rng.random(n) < 0.3]
    tracked = np.where(present[:, 0] & (rng.random(n) < 0.8), rng.uniform(1, 2, n), 0.0)
    noise = np.where(rng.random(n) < 0.3, rng.uniform(0, 2, n), 0.0)
    acts = sparse.csc_matrix(np.c_[tracked, noise, np.zeros(n)])
    m = match_conditions(acts, present, ["Edema", "Atelectasis"])
    assert set(m) == {0} and m[0].condition == "Edema" and m[0].auroc > 0.8


def _split(studies, x):
    emb = EmbeddingSet([s.image_ids[0] for s in studies], torch.from_numpy(x), encoder="test")
    half = len(studies) // 2
    return emb.select(emb.ids[:half]), emb.select(emb.ids[half:])


@pytest.mark.slow
def test_iu_condition_correlated_feature_gets_its_condition(iu_studies, tiny_sae):
    """Class-token dim 0 (SAE feature 0) carries the labeller's Cardiomegaly: the label path must
    describe feature 0 as cardiomegaly, and it must hold up on held-out reports (AUROC > 0.8)."""
    studies = iu_studies[:1600]
    positive = np.array([label_report(s.findings)["Cardiomegaly"] in (1, -1) for s in studies])
    assert positive.sum() > 40
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, size=(len(studies), 8)).astype(np.float32)
    x[:, 0] += positive * rng.uniform(1.0, 2.0, len(studies))
    train, held = _split(studies, x)
    d = build_dictionary(tiny_sae, train, studies, held_out=held, progress=False)
    f0 = d.get(0)
    asserted = {c for c, v in label_report(f0.description).items() if v in (1, -1) and c != "No Finding"}
    assert asserted == {"Cardiomegaly"}, f0.description
    assert len(f0.description.split()) <= 15
    assert f0.usable and f0.description_score > 0.8
    assert d.meta["label_driven"]["0"]["condition"] == "Cardiomegaly"
    assert not d.get(2).usable  # dead


@pytest.mark.slow
def test_iu_random_activations_describe_nothing_usable(iu_studies, tiny_sae):
    studies = iu_studies[:1200]
    x = np.random.default_rng(1).normal(0, 0.5, size=(len(studies), 8)).astype(np.float32)
    train, held = _split(studies, x)
    d = build_dictionary(tiny_sae, train, studies, held_out=held, progress=False)
    assert d.meta["label_driven"] == {}
    assert not any(f.usable for f in d.features)


def test_a_piece_of_the_canonical_sentence_does_not_replace_it():
    """On label-derived text every phrase is a piece of a phrasebook sentence: the sentence stays.
    A phrase of real reports that states the same condition in other words still refines it."""
    from collections import Counter

    from saerad.features.extractive import ExtractiveDescriber
    from saerad.features.label_driven import CANONICAL, ConditionMatch

    match = ConditionMatch("Edema", auroc=0.8, pvalue=1e-6, n_positive=40, n=400, odds_ratio=4.0)
    describer = ExtractiveDescriber()
    fragments = Counter({"pulmonary edema": 12, "there is pulmonary edema": 12})
    df = Counter({"pulmonary edema": 40, "there is pulmonary edema": 40, "interstitial edema": 10})
    kept = describer._by_condition(0, match, fragments, 16, df, 400)
    assert kept.text == CANONICAL["Edema"] and "refined" not in kept.info
    refined = describer._by_condition(0, match, fragments + Counter({"interstitial edema": 9}), 16, df, 400)
    assert refined.text == "interstitial edema" and refined.info["refined"]
