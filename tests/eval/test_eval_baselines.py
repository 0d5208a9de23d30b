"""Baselines: the retrieval neighbour is never of the query's own patient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saerad.errors import ConfigError
from saerad.eval.baselines import nearest_neighbours, retrieval_reports


def test_nearest_neighbours_are_patient_disjoint() -> None:
    pool = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    query = np.array([[1.0, 0.05], [0.1, 1.0]])
    found = nearest_neighbours(query, pool, ["pA", "pB"], ["pA", "pB", "pC"])
    assert found.index.tolist() == [1, 2]  # query 0's best (row 0) is its own patient
    assert found.similarity[0] == pytest.approx(float(pool[1] @ query[0] / np.linalg.norm(pool[1]) / np.linalg.norm(query[0])))


def test_retrieval_reports_with_an_embedding_set() -> None:
    from saerad.encoders.store import EmbeddingSet

    emb = EmbeddingSet(ids=["q1", "t1", "t2"], tokens=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.2]]), encoder="test")
    texts, got = retrieval_reports(["q1"], ["p1"], ["t1", "t2"], ["p2", "p3"], ["report one", "report two"], emb)
    assert texts == ["report two"] and got == ["t2"]
    with pytest.raises(ConfigError):
        retrieval_reports(["qX"], ["p1"], ["t1"], ["p2"], ["x"], emb)
