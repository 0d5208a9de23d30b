"""Resident batches are resumable: batch k is a pure function of k."""

from __future__ import annotations

import torch

from saerad.sae.data import ResidentBatches


def test_resident_batches_resume_and_small_sets():
    data = torch.arange(10.0)[:, None]
    stream = ResidentBatches(data, 4, seed=5)
    batches = [next(stream) for _ in range(6)]  # 24 rows: more than two epochs
    assert torch.equal(torch.sort(torch.cat(batches[:2] + [batches[2][:2]]).flatten()).values, torch.arange(10.0))
    later = ResidentBatches(data, 4, seed=5, start_step=4)
    assert torch.equal(next(later), batches[4]) and torch.equal(next(later), batches[5])
    assert next(ResidentBatches(data, 25)).shape == (25, 1)  # batch larger than the set
