"""saerad.ood: the out-of-distribution check, its calibration on training patients, and its files."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.errors import ConfigError
from saerad.ood import TypicalityCheck, calibrate, shrunk_covariance


def _patients(rng, n_patients=60, per=3, d=24, scale=1.0):
    tokens = rng.normal(0, scale, (n_patients * per, d)) @ np.diag(np.linspace(3, 0.3, d))
    return tokens, [f"p{i // per}" for i in range(len(tokens))]


def test_ledoit_wolf_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(0)
    for n, d in ((50, 10), (30, 80)):  # more and fewer samples than dimensions
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        mean, cov, shrinkage = shrunk_covariance(x)
        ref = sklearn.LedoitWolf().fit(x)
        np.testing.assert_allclose(cov, ref.covariance_, rtol=1e-10, atol=1e-10)
        assert shrinkage == pytest.approx(ref.shrinkage_)
        np.testing.assert_allclose(mean, ref.location_)


def test_unseen_patients_pass_and_shifted_or_odd_tokens_are_flagged():
    rng = np.random.default_rng(1)
    train, groups = _patients(rng)
    check = calibrate(train, groups)
    assert check.meta["n_patients"] == 60 and check.meta["folds"] == 5
    assert check.meta["training_flagged_share"] <= 0.02
    unseen, _ = _patients(np.random.default_rng(2))
    assert np.mean([a.flagged for a in check.assess(unseen)]) <= 0.05
    shifted = unseen + 4.0  # another kind of image: far in every direction
    assert all(a.flagged for a in check.assess(shifted))
    odd = np.zeros((1, 24))
    odd[0, -1] = 30.0  # tiny along the training data's smallest direction of variation
    assert check.assess(odd)[0].flagged


def test_the_threshold_is_out_of_fold_not_in_sample():
    rng = np.random.default_rng(3)
    train, groups = _patients(rng, n_patients=20, per=2, d=30)
    check = calibrate(train, groups)
    in_sample = check.distances(train)
    # in-sample distances flatter the fit; the reference distances are those of unseen patients
    assert np.median(check.reference) > 1.1 * np.median(in_sample)
    assert check.threshold == pytest.approx(1.25 * np.quantile(check.reference, 0.99))


def test_assessment_reads_like_a_p_value():
    rng = np.random.default_rng(4)
    train, groups = _patients(rng)
    check = calibrate(train, groups)
    near, far = check.assess(np.vstack([check.mean, check.mean + 50]))
    assert near.training_share_farther == 1.0 and not near.flagged
    assert far.training_share_farther == 0.0 and far.flagged
    assert far.distance > far.threshold == pytest.approx(check.threshold, abs=1e-3)


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    train, groups = _patients(rng, d=8)
    check = calibrate(train, groups, meta={"encoder": "test"})
    loaded = TypicalityCheck.load(check.save(tmp_path / "ood"))
    np.testing.assert_allclose(loaded.distances(train), check.distances(train))
    assert loaded.threshold == check.threshold and loaded.meta == check.meta


def test_too_little_data_is_refused():
    with pytest.raises(ConfigError, match="at least 2 patients"):
        calibrate(np.zeros((4, 3)), ["a"] * 4)
    with pytest.raises(ConfigError, match="one patient id per"):
        calibrate(np.zeros((4, 3)), ["a", "b"])
