"""Clinical-label F1 against values computed by hand, sklearn, and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from saerad.eval.bootstrap import percentile_ci, resample_weights
from saerad.eval.f1 import f1_report, label_f1
from saerad.radtext.conditions import CONDITIONS

N = np.nan
C = {name: i for i, name in enumerate(CONDITIONS)}


def _labels(rows: list[dict[str, int]]) -> np.ndarray:
    out = np.full((len(rows), 14), N)
    for r, row in enumerate(rows):
        for name, value in row.items():
            out[r, C[name]] = value
    return out


REF = _labels(
    [
        {"Cardiomegaly": 1, "Pleural Effusion": 1},
        {"Cardiomegaly": -1, "Edema": 1},
        {"No Finding": 1},
        {"Pleural Effusion": 0, "Edema": -1},
    ]
)
PRED = _labels(
    [
        {"Cardiomegaly": 1, "Pleural Effusion": -1},
        {"Cardiomegaly": 0, "Edema": 1},
        {"No Finding": 1, "Cardiomegaly": 1},
        {"Pleural Effusion": 1, "Edema": -1},
    ]
)


def test_hand_computed_uncertain_as_positive() -> None:
    # Cardiomegaly tp1 fp1 fn1 -> 0.5; Edema tp2 -> 1; Effusion tp1 fp1 -> 2/3; No Finding tp1 -> 1.
    out = label_f1(REF, PRED, uncertain_as=1)
    assert out["per_condition"]["Cardiomegaly"] == pytest.approx(0.5)
    assert out["per_condition"]["Edema"] == pytest.approx(1.0)
    assert out["per_condition"]["Pleural Effusion"] == pytest.approx(2 / 3)
    assert out["per_condition"]["Fracture"] == 0.0  # absent on both sides: 0, still in the macro mean
    assert out["micro_14"] == pytest.approx(10 / 13)  # TP 5, FP 2, FN 1
    assert out["macro_14"] == pytest.approx((0.5 + 1 + 2 / 3 + 1) / 14)
    assert out["micro_5"] == pytest.approx(8 / 11)  # TP 4, FP 2, FN 1
    assert out["macro_5"] == pytest.approx((0.5 + 1 + 2 / 3) / 5)


def test_hand_computed_uncertain_as_negative() -> None:
    out = label_f1(REF, PRED, uncertain_as=0)
    assert out["per_condition"]["Cardiomegaly"] == pytest.approx(2 / 3)
    assert out["per_condition"]["Pleural Effusion"] == 0.0
    assert out["micro_14"] == pytest.approx(6 / 9)
    assert out["macro_14"] == pytest.approx((2 / 3 + 1 + 1) / 14)
    assert out["micro_5"] == pytest.approx(4 / 7)
    assert out["macro_5"] == pytest.approx((2 / 3 + 1) / 5)


def test_matches_sklearn_on_random_labels() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    ref = rng.choice([1.0, 0.0, -1.0, N], size=(200, 14), p=[0.2, 0.3, 0.1, 0.4])
    pred = rng.choice([1.0, 0.0, -1.0, N], size=(200, 14), p=[0.2, 0.3, 0.1, 0.4])
    ref[:, C["Fracture"]] = N  # one condition absent everywhere
    pred[:, C["Fracture"]] = N
    for uncertain_as in (1, 0):
        r = (ref == 1) | ((ref == -1) & bool(uncertain_as))
        p = (pred == 1) | ((pred == -1) & bool(uncertain_as))
        out = label_f1(ref, pred, uncertain_as=uncertain_as)
        assert out["micro_14"] == pytest.approx(f1_score(r, p, average="micro", zero_division=0))
        assert out["macro_14"] == pytest.approx(f1_score(r, p, average="macro", zero_division=0))
        five = [C[c] for c in ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")]
        assert out["macro_5"] == pytest.approx(f1_score(r[:, five], p[:, five], average="macro", zero_division=0))


def test_bootstrap_report_has_both_conventions_and_cis() -> None:
    rng = np.random.default_rng(0)
    ref = rng.choice([1.0, 0.0, N], size=(300, 14))
    pred = np.where(rng.random((300, 14)) < 0.8, ref, rng.choice([1.0, 0.0, N], size=(300, 14)))
    report = f1_report(ref, pred, n_resamples=200, seed=1)
    assert set(report) == {"uncertain_positive", "uncertain_negative"}
    micro = report["uncertain_positive"]["micro_14"]
    lo, hi = micro["ci95"]
    assert lo <= micro["value"] <= hi and hi - lo < 0.2
    assert set(report["uncertain_positive"]["per_condition"]) == set(CONDITIONS)
    # resampling is reproducible
    assert f1_report(ref, pred, n_resamples=200, seed=1) == report


def test_resample_weights() -> None:
    w = resample_weights(50, 30, seed=0)
    assert w.shape == (30, 50) and (w.sum(1) == 50).all()
    assert (resample_weights(50, 30, seed=0) == w).all()
    assert percentile_ci(np.array([])) is None
    assert percentile_ci(np.arange(101.0)) == pytest.approx([2.5, 97.5])
