"""Held-out splits never leak an image (or patient) into training; batches are resumable."""

from __future__ import annotations

import pytest
import torch

from saerad.errors import ConfigError
from saerad.sae.data import ResidentBatches, base_id, read_split_file, split_ids

IDS = [f"im{i}" for i in range(40)] + [f"im{i}#aug{k}" for i in range(40) for k in (1, 2)]


def test_augmented_views_of_held_out_images_never_train():
    split = split_ids(IDS, val_fraction=0.25, seed=3)
    val_bases = {base_id(IDS[i]) for i in split.val}
    train_bases = {base_id(IDS[i]) for i in split.train}
    assert not val_bases & train_bases
    assert len(val_bases) == 10
    assert all("#" not in IDS[i] for i in split.val)  # metrics on real images only
    assert len(split.train) == 30 * 3


def test_group_disjoint_split_and_seed():
    groups = {f"im{i}": f"patient{i // 4}" for i in range(40)}
    split = split_ids(IDS, val_fraction=0.2, seed=0, groups=groups)
    val_groups = {groups[base_id(IDS[i])] for i in split.val}
    assert val_groups.isdisjoint({groups[base_id(IDS[i])] for i in split.train})
    assert split_ids(IDS, val_fraction=0.2, seed=0, groups=groups) == split
    assert split_ids(IDS, val_fraction=0.2, seed=1, groups=groups) != split


def test_split_file(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("id,patient_id,split\nim0,p0,val\nim1,p0,\nim2,p1,train\n")
    groups, assignment = read_split_file(path)
    assert groups == {"im0": "p0", "im1": "p0", "im2": "p1"} and assignment == {"im0": "val", "im2": "train"}
    split = split_ids(["im0", "im1", "im2", "im1#aug1"], val_fraction=0.1, groups=groups, assignment=assignment)
    assert split.val == [0, 1] and split.train == [2]  # im1 follows its patient into validation
    bad = tmp_path / "bad.csv"
    bad.write_text("name,split\nim0,val\n")
    with pytest.raises(ConfigError):
        read_split_file(bad)


def test_resident_batches_resume_and_small_sets():
    data = torch.arange(10.0)[:, None]
    stream = ResidentBatches(data, 4, seed=5)
    batches = [next(stream) for _ in range(6)]  # 24 rows: more than two epochs
    assert torch.equal(torch.sort(torch.cat(batches[:2] + [batches[2][:2]]).flatten()).values, torch.arange(10.0))
    later = ResidentBatches(data, 4, seed=5, start_step=4)
    assert torch.equal(next(later), batches[4]) and torch.equal(next(later), batches[5])
    assert next(ResidentBatches(data, 25)).shape == (25, 1)  # batch larger than the set
