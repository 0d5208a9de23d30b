"""EmbeddingSet: safetensors round trip without pickle, selection, augmented ids."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from saerad.datasets.ids import base_id, is_augmented
from saerad.encoders.store import EmbeddingSet
from saerad.errors import BundleError, ConfigError


def _set(n: int = 5, dim: int = 4) -> EmbeddingSet:
    ids = [f"p1/s{i}/view" for i in range(n)] + ["é-unicode", "p1/s0/view#aug1"]
    return EmbeddingSet(ids=ids, tokens=torch.randn(n + 2, dim), encoder="default", meta={"dataset": "x"})


def test_round_trip(tmp_path):
    original = _set()
    path = tmp_path / "emb.safetensors"
    original.save(path)
    loaded = EmbeddingSet.load(path)
    assert loaded.ids == original.ids and loaded.encoder == "default" and loaded.meta == {"dataset": "x"}
    torch.testing.assert_close(loaded.tokens, original.tokens)
    assert set(load_file(str(path))) == {"tokens", "ids_utf8"}  # plain tensors, nothing to unpickle
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_set_round_trip(tmp_path):
    EmbeddingSet(ids=[], tokens=torch.empty(0, 3), encoder="e").save(tmp_path / "e.safetensors")
    loaded = EmbeddingSet.load(tmp_path / "e.safetensors")
    assert len(loaded) == 0 and loaded.dim == 3


def test_select_keeps_the_requested_order():
    emb = _set()
    picked = emb.select(["p1/s3/view", "p1/s1/view"])
    assert picked.ids == ["p1/s3/view", "p1/s1/view"]
    torch.testing.assert_close(picked.tokens, emb.tokens[[3, 1]])
    with pytest.raises(ConfigError, match="not in this embedding set"):
        emb.select(["nope"])


def test_augmented_ids():
    assert base_id("p1/s0/view#aug12") == "p1/s0/view" and is_augmented("a#aug1")
    assert base_id("plain") == "plain" and not is_augmented("x#augment")
    assert _set().originals().ids[-1] == "é-unicode"


def test_invalid_sets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        EmbeddingSet(ids=["a", "a"], tokens=torch.zeros(2, 2), encoder="e")
    with pytest.raises(ValueError, match="newline"):
        EmbeddingSet(ids=["a\nb"], tokens=torch.zeros(1, 2), encoder="e")
    with pytest.raises(ValueError, match="ids for"):
        EmbeddingSet(ids=["a"], tokens=torch.zeros(2, 2), encoder="e")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError):
        EmbeddingSet.load(tmp_path / "junk.safetensors")
    with pytest.raises(ConfigError, match="not found"):
        EmbeddingSet.load(tmp_path / "missing.safetensors")


def test_concat_refuses_mixed_encoders():
    a = EmbeddingSet(ids=["a"], tokens=torch.zeros(1, 2), encoder="default")
    b = EmbeddingSet(ids=["b"], tokens=torch.zeros(1, 2), encoder="hf:/rad-dino")
    with pytest.raises(ConfigError, match="different encoders"):
        EmbeddingSet.concat([a, b])
    assert EmbeddingSet.concat([a, EmbeddingSet(ids=["c"], tokens=torch.ones(1, 2), encoder="default")]).ids == ["a", "c"]
