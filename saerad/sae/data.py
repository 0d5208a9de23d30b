"""Training data for the SAE: held-out splits that respect image/patient groups, resumable batches.

Ids of augmented views are ``<image id>#<suffix>`` (e.g. ``abc#aug3``): everything before the first
``#`` names the source image, so views of a held-out image never reach training.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from saerad.errors import ConfigError


def base_id(image_id: str) -> str:
    """The source image of a (possibly augmented) view id."""
    return image_id.split("#", 1)[0]


@dataclass(frozen=True)
class Split:
    """Row indices into an embedding set. ``val`` holds only un-augmented views where there are any."""

    train: list[int]
    val: list[int]

    def describe(self) -> dict[str, int]:
        return {"train_vectors": len(self.train), "val_vectors": len(self.val)}


def split_ids(
    ids: Sequence[str],
    *,
    val_fraction: float,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    assignment: Mapping[str, str] | None = None,
) -> Split:
    """Split vectors so that no group (patient, or else source image) is on both sides.

    ``groups`` maps base image ids to a group (e.g. patient id); ``assignment`` maps base image ids
    (or group ids) to ``"train"``/``"val"`` and overrides the random draw. Groups are shuffled with
    ``seed`` and drawn into validation until it holds ``val_fraction`` of the source images.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val fraction must be in [0, 1), got {val_fraction}")
    groups = groups or {}
    bases = [base_id(i) for i in ids]
    group_of = [groups.get(b, b) for b in bases]
    if assignment:
        val_groups = {g for b, g in zip(bases, group_of) if assignment.get(b, assignment.get(g)) == "val"}
    else:
        images_per_group: dict[str, set[str]] = {}
        for b, g in zip(bases, group_of):
            images_per_group.setdefault(g, set()).add(b)
        order = sorted(images_per_group)
        perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
        target = val_fraction * len(set(bases))
        val_groups, n_val = set(), 0
        for k in perm:
            if n_val >= target:
                break
            val_groups.add(order[k])
            n_val += len(images_per_group[order[k]])
    train = [i for i, g in enumerate(group_of) if g not in val_groups]
    val_all = [i for i, g in enumerate(group_of) if g in val_groups]
    originals = [i for i in val_all if "#" not in ids[i]]
    if val_fraction > 0 and not train:
        raise ConfigError("the split leaves no training vectors: lower the validation fraction")
    return Split(train=train, val=originals or val_all)


def read_split_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """A CSV with an ``id`` column and a ``group`` (or ``patient_id``) and/or ``split`` column.

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
    groups, assignment = {}, {}
    for row in rows:
        key = base_id(row["id"])
        if group_col:
            groups[key] = row[group_col]
        if "split" in row and row["split"]:
            value = row["split"].strip().lower()
            if value not in ("train", "val"):
                raise ConfigError(f"split file {path}: split must be 'train' or 'val', got {value!r}")
            assignment[key] = value
    return groups, assignment


class ResidentBatches(Iterator[torch.Tensor]):
    """Endless batches from a tensor kept on the training device, shuffled by index.

    The stream is the concatenation of per-epoch permutations seeded by ``(seed, epoch)``, so batch
    ``k`` is a pure function of ``k``: starting at ``start_step`` after a restart reproduces the
    uninterrupted run exactly. Works when the set is smaller than one batch.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, *, seed: int = 0, start_step: int = 0) -> None:
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise ConfigError("need a non-empty (N, d) tensor of training vectors")
        if batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        self.tokens, self.batch_size, self.seed = tokens, batch_size, seed
        self._pos = start_step * batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.tokens.shape[0], generator=gen).to(self.tokens.device)
            self._epoch = epoch
        return self._perm

    def __next__(self) -> torch.Tensor:
        n = self.tokens.shape[0]
        parts, need = [], self.batch_size
        while need:
            epoch, offset = divmod(self._pos, n)
            take = min(need, n - offset)
            parts.append(self._permutation(epoch)[offset : offset + take])
            self._pos += take
            need -= take
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.tokens[index]
