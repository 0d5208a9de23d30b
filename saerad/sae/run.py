"""One SAE training run from embedding files to a saved SAE and ``metrics.json``.

Used by ``saerad train-sae`` and the quality benchmark. An output folder holds:

- ``sae.safetensors`` + ``sae_config.json``: the final SAE, acting on raw class tokens;
- ``metrics.json``: held-out (and training-set) metrics, the split sizes, the settings, the log;
- ``run.json``: what the run was asked to do, so a restart resumes only the same run;
- ``checkpoints/``: the last checkpoints (model + optimizer + step) for exact resumption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text
from saerad.sae.data import ResidentBatches, Split, read_split_file, split_ids
from saerad.sae.metrics import evaluate_sae
from saerad.sae.model import sae_width
from saerad.sae.trainer import SAETrainer, TrainConfig

log = logging.getLogger(__name__)


def load_embedding_files(paths: Sequence[str | os.PathLike]):
    """Concatenate ``saerad embed`` outputs of one encoder.

    An id present in several files (e.g. the originals inside an ``--augment`` file and the plain
    file) is kept once, provided its vectors agree; conflicting vectors are an error.
    """
    from saerad.encoders.store import EmbeddingSet

    if not paths:
        raise ConfigError("give at least one embeddings file")
    sets = [EmbeddingSet.load(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    first: dict[str, torch.Tensor] = {}
    parts = []
    for path, emb in zip(paths, sets):
        new = []
        for row, image_id in enumerate(emb.ids):
            if image_id not in first:
                first[image_id] = emb.tokens[row]
                new.append(image_id)
            elif not torch.allclose(first[image_id], emb.tokens[row], rtol=1e-4, atol=1e-5):
                raise ConfigError(f"{path}: id {image_id!r} appears in another file with a different vector")
        parts.append(emb if len(new) == len(emb.ids) else emb.select(new))
    try:
        return EmbeddingSet.concat(parts)
    except ValueError as exc:
        raise ConfigError(f"cannot combine embedding files: {exc}") from exc


def make_split(
    ids: Sequence[str], *, val_fraction: float, seed: int, split_file: str | os.PathLike | None = None,
    groups: Mapping[str, str] | None = None,
) -> Split:
    """Group-disjoint split: groups from ``split_file``/``groups`` (patients), else source images."""
    assignment: dict[str, str] = {}
    groups = dict(groups or {})
    if split_file is not None:
        file_groups, assignment = read_split_file(split_file)
        groups.update(file_groups)
    split = split_ids(ids, val_fraction=val_fraction, seed=seed, groups=groups, assignment=assignment)
    if not split.val:
        raise ConfigError("the split leaves no held-out vectors: raise --val-fraction or fix the split file")
    return split


def train_sae_run(
    embeddings: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    expansion: float = 64,
    train_cfg: TrainConfig | None = None,
    val_fraction: float = 0.1,
    split_file: str | os.PathLike | None = None,
    groups: Mapping[str, str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train (or resume) an SAE on embedding files; returns what it writes to ``metrics.json``."""
    train_cfg = train_cfg or TrainConfig()
    out = Path(out_dir)
    emb = load_embedding_files(embeddings)
    split = make_split(emb.ids, val_fraction=val_fraction, seed=train_cfg.seed, split_file=split_file, groups=groups)
    d_sae = sae_width(emb.dim, expansion)
    request = {
        "embeddings": [str(Path(p)) for p in embeddings],
        "encoder": emb.encoder,
        "d_in": emb.dim,
        "d_sae": d_sae,
        "train_config": asdict(train_cfg),
        "split_sha1": hashlib.sha1(json.dumps([split.train, split.val]).encode()).hexdigest(),
    }
    trainer = _resume_or_create(out, request, emb.tokens[split.train], d_sae, train_cfg, device, overwrite)

    batches = ResidentBatches(
        emb.tokens[split.train].to(trainer.device), train_cfg.batch_size, seed=train_cfg.seed,
        start_step=trainer.state.step,
    )
    start = time.perf_counter()
    trainer.fit(batches, checkpoint_root=out / "checkpoints", progress=progress)
    elapsed = time.perf_counter() - start

    sae = trainer.export()
    sae.cfg.meta.update({"encoder": emb.encoder, "steps": trainer.state.step,
                         "lambda": trainer.lam_at(trainer.state.step), "target_l0": train_cfg.target_l0})
    sae.save(out)
    result = {
        "held_out": evaluate_sae(sae, emb.tokens[split.val]).to_dict(),
        "train": evaluate_sae(sae, emb.tokens[split.train]).to_dict(),
        "split": {**split.describe(), "val_fraction": val_fraction, "split_file": str(split_file) if split_file else None},
        "sae": sae.cfg.to_json(),
        "train_config": asdict(train_cfg),
        "train_seconds_this_session": elapsed,
        "history": trainer.state.history,
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    return result


def _resume_or_create(
    out: Path, request: dict[str, Any], train_tokens: torch.Tensor, d_sae: int, cfg: TrainConfig, device: str,
    overwrite: bool,
) -> SAETrainer:
    run_file, ckpt_root = out / "run.json", out / "checkpoints"
    latest = SAETrainer.latest_checkpoint(ckpt_root)
    if latest is not None and not overwrite:
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if previous != json.loads(json.dumps(request)):
            raise ConfigError(
                f"{out} holds checkpoints of a different run (other data, split or settings): "
                "choose another --out or pass --overwrite"
            )
        trainer = SAETrainer.restore(latest, device=device)
        log.info("resuming from %s (step %d)", latest.name, trainer.state.step)
        return trainer
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and ckpt_root.exists():
        import shutil

        shutil.rmtree(ckpt_root)
    atomic_write_text(run_file, json.dumps(request, indent=1))
    return SAETrainer.create(train_tokens, d_sae, cfg, device=device, meta={"encoder": request["encoder"]})

