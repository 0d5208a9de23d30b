"""Who sees which image: the one owner of train / held-out / test for every stage.

Three roles, always by patient (a patient's images never sit on two sides):

- ``test``: evaluation only. The dataset's official test split where it has one (MIMIC-CXR), else
  the patients whose hash falls below ``test_fraction``. ``saerad build`` (SAE, dictionary),
  diffusion training and the retrieval pool never see them; ``saerad evaluate`` scores them.
- ``held_out``: kept out of SAE training and feature statistics, used to score feature descriptions
  and the SAE on unseen patients. MIMIC-CXR's official ``validate`` split; else a second,
  independent hash (``held_out_fraction`` of the remaining patients).
- ``train``: the rest.

A patient's role depends only on a hash of its id (and a salt), so every stage, on any machine,
draws the same split without a split file to carry around; cross-validation (:func:`cv_folds`)
replaces the test role by one fold at a time.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from saerad.datasets.ids import base_id, is_augmented
from saerad.errors import ConfigError

Role = Literal["train", "held_out", "test"]
TRAIN: Role = "train"
HELD_OUT: Role = "held_out"
TEST: Role = "test"
ROLES: tuple[Role, ...] = (TRAIN, HELD_OUT, TEST)

# Official split names of datasets that have one -> role.
OFFICIAL_ROLES: dict[str, Role] = {"train": TRAIN, "validate": HELD_OUT, "val": HELD_OUT, "test": TEST}


def patient_unit(patient_id: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the patient id (and ``salt``, to draw an independent split)."""
    key = f"{salt}:{patient_id}" if salt else str(patient_id)
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitPolicy:
    """How roles are drawn. ``test_patients`` (cross-validation) replaces the test hash."""

    test_fraction: float = 0.2
    held_out_fraction: float = 0.15
    salt: str = ""
    test_patients: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("test_fraction", "held_out_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name.replace('_', ' ')} must be in [0, 1), got {value}")

    def role(self, patient_id: str, official: str | None = None) -> Role:
        if self.test_patients is not None:
            if patient_id in self.test_patients:
                return TEST
        elif official:
            try:
                return OFFICIAL_ROLES[official.strip().lower()]
            except KeyError:
                raise ConfigError(f"unknown official split {official!r}; expected one of {sorted(OFFICIAL_ROLES)}") from None
        elif patient_unit(patient_id, self.salt) < self.test_fraction:
            return TEST
        return HELD_OUT if patient_unit(patient_id, f"{self.salt}held-out") < self.held_out_fraction else TRAIN


DEFAULT_POLICY = SplitPolicy()


@dataclass(frozen=True)
class Partition:
    """Studies by role."""

    train: list
    held_out: list
    test: list

    def role_of_image(self) -> dict[str, Role]:
        return {i: role for role in ROLES for s in getattr(self, role) for i in s.image_ids}

    def fitting(self) -> list:
        """Every study a model may learn from (train + held-out): the retrieval pool, diffusion data."""
        return self.train + self.held_out


def partition(studies: Iterable, policy: SplitPolicy = DEFAULT_POLICY) -> Partition:
    """Split studies (objects with ``patient_id`` and ``split``) into the three roles."""
    out: dict[Role, list] = {r: [] for r in ROLES}
    for study in studies:
        out[policy.role(study.patient_id, study.split)].append(study)
    return Partition(out[TRAIN], out[HELD_OUT], out[TEST])


def vector_rows(ids: Sequence[str], role_of_image: Mapping[str, Role]) -> dict[Role, list[int]]:
    """Row indices of an embedding file per role. Augmented views (``<id>#augK``) only ever train:
    a held-out or test row is an original image; ids of no known image are left out."""
    out: dict[Role, list[int]] = {r: [] for r in ROLES}
    for row, image_id in enumerate(ids):
        role = role_of_image.get(base_id(image_id))
        if role is None or (role != TRAIN and is_augmented(image_id)):
            continue
        out[role].append(row)
    return out


def read_split_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, Role]]:
    """A CSV with an ``id`` column and a ``group`` (or ``patient_id``) and/or ``split`` column
    (``train`` | ``val``/``held_out``), for embedding files made outside a known dataset.

    Returns ``(groups, assignment)`` keyed by base image id.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"cannot read split file {path}: {exc}") from exc
    if not rows or "id" not in rows[0]:
        raise ConfigError(f"split file {path} needs a header with an 'id' column")
    group_col = "group" if "group" in rows[0] else "patient_id" if "patient_id" in rows[0] else None
    if group_col is None and "split" not in rows[0]:
        raise ConfigError(f"split file {path} needs a 'group', 'patient_id' or 'split' column")
    groups: dict[str, str] = {}
    assignment: dict[str, Role] = {}
    for row in rows:
        key = base_id(row["id"])
        if group_col:
            groups[key] = row[group_col]
        value = (row.get("split") or "").strip().lower()
        if value:
            if value not in ("train", "val", "held_out"):
                raise ConfigError(f"split file {path}: split must be 'train' or 'val', got {value!r}")
            assignment[key] = TRAIN if value == "train" else HELD_OUT
    return groups, assignment


def embedding_roles(
    ids: Sequence[str],
    *,
    held_out_fraction: float,
    salt: str = "",
    groups: Mapping[str, str] | None = None,
    assignment: Mapping[str, Role] | None = None,
) -> dict[str, Role]:
    """Roles of the images of a bare embedding file (``saerad train-sae`` outside a dataset):
    train or held-out, drawn by the hash of each image's group (patient, else the image itself).
    ``assignment`` (by image or group id) overrides the draw; an image follows its group."""
    groups = groups or {}
    assignment = assignment or {}
    policy = SplitPolicy(test_fraction=0.0, held_out_fraction=held_out_fraction, salt=salt)
    forced = {groups.get(i, i): r for i, r in assignment.items()}
    forced.update({i: r for i, r in assignment.items() if i not in groups})
    roles: dict[str, Role] = {}
    for image in {base_id(i) for i in ids}:
        group = groups.get(image, image)
        roles[image] = assignment.get(image) or forced.get(group) or policy.role(group)
    return roles


def cv_folds(patients: Iterable[str], k: int, seed: int = 0) -> dict[str, int]:
    """Patient -> fold in ``range(k)``: patients shuffled with ``seed``, fold = rank mod k."""
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k}")
    unique = sorted(set(patients))
    if len(unique) < k:
        raise ConfigError(f"{len(unique)} patients cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[j]: rank % k for rank, j in enumerate(order)}


def fold_policy(folds: Mapping[str, int], fold: int, base: SplitPolicy = DEFAULT_POLICY) -> SplitPolicy:
    """The policy of one cross-validation fold: its patients are the test set."""
    test = frozenset(p for p, f in folds.items() if f == fold)
    return SplitPolicy(base.test_fraction, base.held_out_fraction, base.salt, test_patients=test)
