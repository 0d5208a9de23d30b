"""The one way an SAE is trained: defaults scaled to the data, one resume policy, held-out metrics.

``saerad train-sae`` (embedding files), ``saerad build`` (a dataset) and the benchmarks all call
:func:`train_sae`. An output folder holds:

- ``sae.safetensors`` + ``sae_config.json``: the final SAE, acting on raw class tokens;
- ``metrics.json``: held-out (and training-set) metrics, the settings, the training log;
- ``run.json``: what the run was asked to do (data fingerprint, width, settings);
- ``checkpoints/``: the last checkpoints (model + optimizer + step) for exact resumption.

Resume policy: a folder holds one run. Asked again for the same run, training resumes from its last
checkpoint (or returns at once when it had finished); asked for a different run, it refuses unless
``overwrite``, which discards the other run's checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text
from saerad.sae.architectures import SAEArchitecture, get_architecture
from saerad.sae.base import SparseAutoencoder
from saerad.sae.data import ResidentBatches
from saerad.sae.metrics import evaluate_sae
from saerad.sae.model import sae_width
from saerad.sae.trainer import SAETrainer, TrainConfig

log = logging.getLogger(__name__)

# The architecture `saerad train-sae` and `saerad build` train unless told otherwise. Chosen by
# bench/bench_sae_frontier.py (README, "Which SAE"): Matryoshka reconstructs better, but its reports
# are no better and far fewer of its features hold a validated description.
DEFAULT_ARCHITECTURE = "gated"
# Training-batch L0 the lambda controller aims at unless a lambda is given: held-out images then
# have 15-16 active features (bench/bench_sae_quality.py), the sparsity of SAE-Rad's reports.
DEFAULT_TARGET_L0 = 13.5
SMALL_SET = 50_000  # vectors; below: batches of 512 for 6,000 steps


def auto_expansion(n_images: int, dim: int) -> float:
    """The largest power of two from 1/8 up to SAE-Rad's x64 that keeps two training images per feature.

    A feature is described from the images it fires on most; with ~15 active features per image, two
    images per feature leave each feature ~30 images (of several patients) to be described from.
    MIMIC-CXR (377k images, d = 768) gets x64; a few hundred images at d = 384 get x0.5, which on
    held-out tokens beats x1 at equal L0 with a third of the dead features (bench/bench_sae_quality.py).
    """
    expansion = 64.0
    while expansion > 1 / 8 and 2 * expansion * dim > n_images:
        expansion /= 2
    return expansion


def resolve_architecture(name: str | None, lam: float | None = None) -> SAEArchitecture:
    """The architecture to train (``None``: :data:`DEFAULT_ARCHITECTURE`); refuses a fixed sparsity
    coefficient for one whose L0 is its k (BatchTopK, Matryoshka)."""
    arch = get_architecture(name or DEFAULT_ARCHITECTURE)
    if arch.fixed_l0 and lam is not None:
        raise ConfigError(f"a {arch.name} SAE has no sparsity coefficient: give a target L0 (its k), not a lambda")
    return arch


def default_train_config(
    n_train: int,
    *,
    architecture: str | None = None,
    steps: int | None = None,
    lam: float | None = None,
    target_l0: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    **overrides: Any,
) -> TrainConfig:
    """Training settings scaled to the data (``None`` = the default for ``n_train`` vectors).

    Small sets (a few thousand vectors, augmented views included) train on batches of 512 for 6,000
    steps; large ones on batches of 4,096 for about 20 epochs. Without an explicit ``lam`` the
    sparsity is asked for directly: the lambda controller aims at :data:`DEFAULT_TARGET_L0` (for a
    fixed-L0 architecture such as BatchTopK that target is its k, and a ``lam`` is refused).
    ``architecture``: ``None`` is :data:`DEFAULT_ARCHITECTURE`.
    ``overrides``: any other :class:`TrainConfig` field (``lr``, ``checkpoint_every``, ``compile``...).
    """
    small = n_train < SMALL_SET
    batch = batch_size or min(512 if small else 4096, n_train)
    steps = steps or (6000 if small else max(3000, 20 * n_train // batch))
    arch = resolve_architecture(architecture, lam)
    kwargs: dict[str, Any] = {"architecture": arch.name, "steps": steps, "batch_size": batch, "seed": seed,
                              "lam": arch.default_coef if lam is None else lam}
    if target_l0 is not None or lam is None:
        kwargs["target_l0"] = target_l0 or DEFAULT_TARGET_L0
    kwargs["checkpoint_every"] = max(100, steps // 10)
    kwargs["dead_window_steps"] = min(1000, max(1, steps // 5))
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kwargs)


def train_sae(
    train: torch.Tensor,
    held_out: torch.Tensor | None,
    out_dir: str | os.PathLike | None,
    *,
    expansion: float | None = None,
    n_images: int | None = None,
    cfg: TrainConfig | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train (or resume) an SAE on raw class tokens ``train`` (N, d); returns it and its metrics.

    The architecture and every optimisation setting are ``cfg``'s (default: :func:`default_train_config`).

    ``expansion``: latents per input dimension (``None``: :func:`auto_expansion` of ``n_images``,
    the number of distinct training images, default ``N``). ``held_out``: vectors of patients the SAE
    never trains on, for the metrics. ``out_dir=None`` trains in memory without checkpoints
    (benchmarks).
    """
    if train.ndim != 2 or train.shape[0] == 0:
        raise ConfigError("need a non-empty (N, d) tensor of training vectors")
    cfg = cfg or default_train_config(len(train))
    expansion = expansion or auto_expansion(n_images or len(train), train.shape[1])
    d_sae = sae_width(train.shape[1], expansion)
    meta = dict(meta or {})
    request = {
        "data": hashlib.sha256(np.ascontiguousarray(train.float().numpy()).tobytes()).hexdigest(),
        "d_in": int(train.shape[1]),
        "d_sae": d_sae,
        "train_config": json.loads(json.dumps(asdict(cfg))),
    }
    out = Path(out_dir) if out_dir is not None else None
    trainer = _resume_or_create(out, request, train, d_sae, cfg, device, overwrite, meta)
    batches = ResidentBatches(train.to(trainer.device), cfg.batch_size, seed=cfg.seed, start_step=trainer.state.step)
    start = time.perf_counter()
    trainer.fit(batches, checkpoint_root=out / "checkpoints" if out else None, progress=progress)
    elapsed = time.perf_counter() - start

    sae = trainer.export()
    sae.cfg.meta.update({**meta, "steps": trainer.state.step, "lambda": trainer.lam_at(trainer.state.step),
                         "target_l0": cfg.target_l0, "expansion": expansion})
    metrics = {
        "held_out": evaluate_sae(sae, held_out.float()).to_dict() if held_out is not None and len(held_out) else None,
        "train": evaluate_sae(sae, train.float()).to_dict(),
        "vectors": {"train": int(len(train)), "held_out": int(len(held_out)) if held_out is not None else 0},
        "expansion": expansion,
        "sae": sae.cfg.to_json(),
        "train_config": asdict(cfg),
        "train_seconds_this_session": round(elapsed, 2),
        "history": trainer.state.history,
    }
    if out is not None:
        sae.save(out)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return sae, metrics


def _resume_or_create(
    out: Path | None, request: dict[str, Any], train: torch.Tensor, d_sae: int, cfg: TrainConfig, device: str,
    overwrite: bool, meta: dict[str, Any],
) -> SAETrainer:
    if out is None:
        return SAETrainer.create(train, d_sae, cfg, device=device, meta=meta)
    run_file, ckpt_root = out / "run.json", out / "checkpoints"
    latest = SAETrainer.latest_checkpoint(ckpt_root)
    if latest is not None:
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if previous == request:
            trainer = SAETrainer.restore(latest, device=device)
            log.info("train-sae: resuming from %s (step %d)", latest.name, trainer.state.step)
            return trainer
        if not overwrite:
            raise ConfigError(
                f"{out} holds checkpoints of a different run (other data, width or settings): "
                "choose another output folder or overwrite it"
            )
        log.info("train-sae: discarding the checkpoints of a different run in %s", out)
        shutil.rmtree(ckpt_root)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(request, indent=1))
    return SAETrainer.create(train, d_sae, cfg, device=device, meta=meta)


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
