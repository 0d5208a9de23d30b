"""`saerad train-sae` end to end on a small synthetic embedding file: outputs, resume, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from saerad.cli import _register, app
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError
from saerad.sae.model import GatedSAE


@pytest.fixture()
def embedding_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    ids = [f"img{i}" for i in range(60)] + [f"img{i}#aug1" for i in range(60)]
    tokens = torch.randn(len(ids), 8, generator=gen) * 5 + 2
    path = tmp_path / "emb.safetensors"
    EmbeddingSet(ids=ids, tokens=tokens, encoder="synthetic").save(path)
    return path


_register()


def run(*args: str, catch: bool = False):
    return CliRunner().invoke(app, ["train-sae", *args], catch_exceptions=catch)


def test_train_sae_writes_sae_and_held_out_metrics(tmp_path, embedding_file):
    out = tmp_path / "sae"
    args = ["--embeddings", str(embedding_file), "--out", str(out), "--expansion", "4", "--steps", "30",
            "--batch-size", "16", "--checkpoint-every", "10", "--val-fraction", "0.2"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["vectors"]["held_out"]  # originals of ~20 % of the images (by hash); their views never train
    assert 5 <= held <= 20 and metrics["vectors"]["train"] == 2 * (60 - held)
    assert set(metrics["held_out"]) >= {"explained_variance", "l0", "dead_fraction", "shrinkage"}
    sae = GatedSAE.load(out)
    assert sae.cfg.d_sae == 32 and sae.cfg.meta["encoder"] == "synthetic" and sae.cfg.meta["steps"] == 30
    assert (out / "checkpoints" / "latest").read_text() == "step-000000030"

    again = run(*args)  # same command: resumes at the end, nothing retrained
    assert again.exit_code == 0
    assert json.loads((out / "metrics.json").read_text())["held_out"] == metrics["held_out"]

    changed = run(*[a if a != "30" else "40" for a in args], catch=True)
    assert isinstance(changed.exception, ConfigError) and "different run" in str(changed.exception)


def test_train_sae_resumes_after_interruption(tmp_path, embedding_file, monkeypatch):
    from saerad.sae import trainer as trainer_mod

    out = tmp_path / "sae"
    args = ["--embeddings", str(embedding_file), "--out", str(out), "--expansion", "2", "--steps", "20",
            "--batch-size", "16", "--checkpoint-every", "5"]
    original = trainer_mod.SAETrainer.train_step

    def crash_at_12(self, x):
        if self.state.step == 12:
            raise RuntimeError("simulated crash")
        return original(self, x)

    monkeypatch.setattr(trainer_mod.SAETrainer, "train_step", crash_at_12)
    crashed = run(*args, catch=True)
    assert isinstance(crashed.exception, RuntimeError)
    assert (out / "checkpoints" / "latest").read_text() == "step-000000010"
    monkeypatch.setattr(trainer_mod.SAETrainer, "train_step", original)
    assert run(*args).exit_code == 0
    resumed = GatedSAE.load(out).state_tensors()

    straight_out = tmp_path / "straight"
    assert run(*[str(straight_out) if a == str(out) else a for a in args]).exit_code == 0
    for name, value in GatedSAE.load(straight_out).state_tensors().items():
        assert torch.equal(value, resumed[name]), name


def test_train_sae_with_another_architecture(tmp_path, embedding_file):
    from saerad.sae.architectures import load_sae

    out = tmp_path / "topk"
    base = ["--embeddings", str(embedding_file), "--out", str(out), "--expansion", "2", "--steps", "20",
            "--batch-size", "16", "--arch", "matryoshka"]
    result = run(*base, "--target-l0", "3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["architecture"] == "matryoshka"
    sae = load_sae(out)
    assert sae.architecture == "matryoshka" and sae.cfg.k == 3 and sae.cfg.prefixes == [1, 2, 4, 8, 16]
    refused = run(*base, "--lambda", "1", catch=True)
    assert isinstance(refused.exception, ConfigError) and "no sparsity coefficient" in str(refused.exception)
    assert run(*base, "--arch", "sparsemax").exit_code != 0  # not a choice


def test_embedding_files_with_shared_ids_merge(tmp_path):
    from saerad.sae.run import load_embedding_files

    tokens = torch.randn(3, 4)
    EmbeddingSet(ids=["a", "b", "c"], tokens=tokens, encoder="e").save(tmp_path / "plain.safetensors")
    aug = torch.cat([tokens[:2], torch.randn(2, 4)])
    EmbeddingSet(ids=["a", "b", "a#aug1", "b#aug1"], tokens=aug, encoder="e").save(tmp_path / "aug.safetensors")
    merged = load_embedding_files([tmp_path / "plain.safetensors", tmp_path / "aug.safetensors"])
    assert merged.ids == ["a", "b", "c", "a#aug1", "b#aug1"]
    EmbeddingSet(ids=["a"], tokens=torch.randn(1, 4), encoder="e").save(tmp_path / "clash.safetensors")
    with pytest.raises(ConfigError, match="different vector"):
        load_embedding_files([tmp_path / "plain.safetensors", tmp_path / "clash.safetensors"])
