"""The one split owner: roles by patient, official splits, views follow their image, CV folds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from saerad.datasets.split import (
    DEFAULT_POLICY,
    HELD_OUT,
    TEST,
    TRAIN,
    SplitPolicy,
    cv_folds,
    embedding_roles,
    fold_policy,
    partition,
    read_split_file,
    vector_rows,
)
from saerad.errors import ConfigError


def _study(i: int, patient: str, split: str | None = None):
    return SimpleNamespace(patient_id=patient, split=split, image_ids=(f"im{i}",))


def test_roles_are_by_patient_and_stable():
    studies = [_study(i, f"p{i // 3}") for i in range(600)]
    parts = partition(studies)
    for role in (TRAIN, HELD_OUT, TEST):
        patients = {s.patient_id for s in getattr(parts, role)}
        others = {s.patient_id for r in (TRAIN, HELD_OUT, TEST) if r != role for s in getattr(parts, r)}
        assert patients and not patients & others
    assert 0.12 < len(parts.test) / 600 < 0.28  # ~20 % of patients
    assert 0.06 < len(parts.held_out) / 600 < 0.2  # ~15 % of the rest
    assert partition(studies).role_of_image() == parts.role_of_image()
    assert SplitPolicy(salt="other").role("p1") in (TRAIN, HELD_OUT, TEST)


def test_official_split_wins_and_unknown_names_are_refused():
    studies = [_study(0, "p0", "test"), _study(1, "p1", "validate"), _study(2, "p2", "train")]
    parts = partition(studies)
    assert [len(parts.train), len(parts.held_out), len(parts.test)] == [1, 1, 1]
    assert parts.test[0].patient_id == "p0" and parts.held_out[0].patient_id == "p1"
    with pytest.raises(ConfigError, match="unknown official split"):
        partition([_study(3, "p3", "dev")])


def test_views_only_train_and_unknown_ids_are_left_out():
    roles = {"a": TRAIN, "b": HELD_OUT, "c": TEST}
    ids = ["a", "a#aug1", "b", "b#aug1", "c", "c#aug2", "zzz"]
    rows = vector_rows(ids, roles)
    assert rows == {TRAIN: [0, 1], HELD_OUT: [2], TEST: [4]}


def test_embedding_roles_follow_groups_and_the_split_file(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("id,patient_id,split\nim0,p0,val\nim1,p0,\nim2,p1,train\n")
    groups, assignment = read_split_file(path)
    assert groups == {"im0": "p0", "im1": "p0", "im2": "p1"} and assignment == {"im0": HELD_OUT, "im2": TRAIN}
    roles = embedding_roles(["im0", "im1", "im2", "im1#aug1"], held_out_fraction=0.1, groups=groups, assignment=assignment)
    assert roles == {"im0": HELD_OUT, "im1": HELD_OUT, "im2": TRAIN}  # im1 follows its patient
    many = embedding_roles([f"x{i}" for i in range(400)], held_out_fraction=0.25)
    assert 60 < sum(r == HELD_OUT for r in many.values()) < 140 and TEST not in many.values()
    assert embedding_roles([f"x{i}" for i in range(400)], held_out_fraction=0.25, salt="1") != many
    bad = tmp_path / "bad.csv"
    bad.write_text("name,split\nim0,val\n")
    with pytest.raises(ConfigError):
        read_split_file(bad)


def test_cv_folds_cover_every_patient_once():
    folds = cv_folds([f"p{i % 50}" for i in range(200)], 5, seed=1)
    assert sorted(folds) == sorted({f"p{i}" for i in range(50)}) and sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    policy = fold_policy(folds, 2)
    assert all((policy.role(p) == TEST) == (f == 2) for p, f in folds.items())
    assert DEFAULT_POLICY.test_patients is None
    with pytest.raises(ConfigError):
        cv_folds(["a", "b"], 5)
