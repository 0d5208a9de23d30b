"""Training loop of the class-token-conditioned diffusion model.

epsilon-prediction DDPM loss with uniform timesteps, condition dropout to the null embedding, AdamW
with a linear warm-up then a constant rate (so a run can be extended without changing its past),
EMA weights (the ones exported and used for inference), bf16 autocast on CUDA (and on CPU with
``cpu_bf16``, set by the CPU preset: ~1.6x faster where the CPU has AVX512-BF16).

Exact resume: every random draw of step ``s`` (batch indices, noise, timesteps, dropout mask) comes
from a generator seeded with ``(seed, s)`` and the data order is a per-epoch permutation seeded with
``(seed, epoch)``; a checkpoint holds model, EMA, optimizer and step, written to a fresh directory
that is renamed into place only when complete. Continuing from a checkpoint therefore gives the
same weights as an uninterrupted run (up to non-deterministic GPU kernels).

Output directory::

    checkpoint-<step>/   model.safetensors, ema.safetensors, optimizer.pt, state.json
    diffusion/           the exported EMA model (see :func:`saerad.diffusion.model.save_diffusion`)
    samples/step_<step>.png   rows: training images | DDIM reconstructions | fresh samples
    train_log.jsonl      mean loss every ``log_every`` steps
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saerad.devices import resolve_device
from saerad.diffusion.data import PairedImages, from_model
from saerad.diffusion.model import (
    TokenConditionedUNet,
    make_schedulers,
    save_diffusion,
)
from saerad.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2


@dataclass
class DiffusionTrainConfig:
    """Hyper-parameters. ``max_minutes`` stops a run early (after a checkpoint): resume later."""

    resolution: int = 128
    architecture: str = "small"
    steps: int = 20_000
    batch_size: int = 16
    lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    checkpoint_every: int = 250
    sample_every: int = 1000
    sample_steps: int = 25
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    max_minutes: float | None = None
    cpu_bf16: bool = False  # bf16 autocast on CPU too (~1.6x faster on CPUs with AVX512-BF16)
    init_from: str | None = None  # a saved diffusion model to start from (fine-tuning), not from random
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch size must be positive")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ConfigError("cond_dropout must be in [0, 1)")


# Presets: "tiny" for tests, "cpu" = the smallest useful model (trained on one CPU core here),
# "gpu" = a larger model for a real GPU run.
PRESETS: dict[str, DiffusionTrainConfig] = {
    "tiny": DiffusionTrainConfig(
        resolution=32, architecture="tiny", steps=40, batch_size=4, lr=1e-3, warmup_steps=5,
        ema_decay=0.9, checkpoint_every=20, sample_every=0, sample_steps=10, log_every=5,
    ),
    "cpu": DiffusionTrainConfig(resolution=128, architecture="small", steps=4000, batch_size=8, lr=3e-4, warmup_steps=100,
                       ema_decay=0.998, checkpoint_every=200, sample_every=500, cpu_bf16=True),
    "gpu": DiffusionTrainConfig(resolution=128, architecture="base", steps=60_000, batch_size=64, lr=1e-4,
                       warmup_steps=1000, ema_decay=0.9999, checkpoint_every=2000, sample_every=5000),
}


def preset(name: str, **overrides: Any) -> DiffusionTrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------- randomness


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5AE]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of step ``step``: consecutive slots of per-epoch shuffles (each image once per epoch)."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n)
        out.append(int(_epoch_permutation(n, seed, epoch)[offset]))
    return out


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ---------------------------------------------------------------------------- checkpoints


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in out_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if path.is_dir() and suffix.isdigit() and (path / "state.json").is_file():
            found.append((int(suffix), path))
    return sorted(found)


def _save_checkpoint(out_dir: Path, step: int, model, ema, optimizer, state: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    final = out_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = out_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in _checkpoints(out_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(path: Path, model, ema, optimizer, device) -> dict[str, Any]:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
    ema.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(device)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- samples


@torch.no_grad()
def write_sample_grid(model: TokenConditionedUNet, pairs: PairedImages, path: Path, *, steps: int, seed: int) -> None:
    """Rows: up to 4 training images, their DDIM reconstructions, fresh samples from their tokens."""
    from saerad.diffusion.figure import image_grid
    from saerad.diffusion.invert import ddim_invert, ddim_sample

    device = next(model.parameters()).device
    pick = np.linspace(0, len(pairs) - 1, num=min(4, len(pairs))).round().astype(int).tolist()
    x0 = pairs.images[pick].float().to(device)
    tokens = pairs.tokens[pick].to(device)
    x_T = ddim_invert(model, x0, tokens, steps=steps)
    rec = ddim_sample(model, x_T, tokens, steps=steps)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    fresh = ddim_sample(model, noise, tokens, steps=steps)
    image_grid([from_model(x0), from_model(rec), from_model(fresh)]).save(path)


# ---------------------------------------------------------------------------- training


def _lr_at(cfg: DiffusionTrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_diffusion(
    pairs: PairedImages,
    out_dir: str | Path,
    cfg: DiffusionTrainConfig,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) into ``out_dir``; returns the exported model's metadata."""
    from tqdm.auto import tqdm

    if len(pairs) == 0:
        raise ConfigError("no training images")
    if pairs.resolution != cfg.resolution:
        raise ConfigError(f"images are {pairs.resolution} px but the config asks for {cfg.resolution}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)

    with torch.random.fork_rng(devices=[]):  # seeded init, without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = TokenConditionedUNet.from_architecture(
            cfg.architecture, token_dim=pairs.tokens.shape[1], resolution=cfg.resolution
        )
    model.set_token_statistics(pairs.tokens)
    if cfg.init_from and not _checkpoints(out_dir):
        _initialise_from(model, cfg.init_from)
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = make_schedulers(model)
    alphas = scheduler.alphas_cumprod.to(device)

    state: dict[str, Any] = {"step": 0, "wall_seconds": 0.0, "recent_losses": [], "config": _config_json(cfg)}
    existing = _checkpoints(out_dir)
    if existing:
        step0, path = existing[-1]
        state = _load_checkpoint(path, model, ema, optimizer, device)
        _check_compatible(state["config"], cfg)
        state["config"] = _config_json(cfg)
        log.info("resuming from %s (step %d)", path, step0)

    n = len(pairs)
    started = time.monotonic()
    wall0 = float(state["wall_seconds"])
    recent: list[float] = list(state["recent_losses"])
    window: list[float] = []
    step = int(state["step"])
    log_path = out_dir / "train_log.jsonl"
    bar = tqdm(total=cfg.steps, initial=step, desc="train-diffusion", disable=not progress, dynamic_ncols=True)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or cfg.cpu_bf16)

    def elapsed() -> float:
        return wall0 + time.monotonic() - started

    def checkpoint() -> None:
        state.update(step=step, wall_seconds=elapsed(), recent_losses=recent[-200:])
        _save_checkpoint(out_dir, step, model, ema, optimizer, state)
        export(ema, out_dir / "diffusion", cfg, pairs, state)

    stopped_early = False
    while step < cfg.steps:
        idx = batch_indices(n, cfg.batch_size, step, cfg.seed)
        g = _step_generator(cfg.seed, step)
        x0 = pairs.images[idx].float()
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        drop = torch.rand(len(idx), generator=g) < cfg.cond_dropout
        x0, noise, t, drop = x0.to(device), noise.to(device), t.to(device), drop.to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(cfg, step)
        with amp:
            pred = model(x_t, t, pairs.tokens[idx].to(device), drop)
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        _ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        value = float(loss.detach())
        recent.append(value)
        window.append(value)
        del recent[:-200]
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(recent[-50:]):.4f}")
        if cfg.log_every and step % cfg.log_every == 0:
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "loss": float(np.mean(window)), "lr": _lr_at(cfg, step - 1),
                                     "seconds": round(elapsed(), 1)}) + "\n")
            window.clear()
        if cfg.sample_every and step % cfg.sample_every == 0:
            (out_dir / "samples").mkdir(exist_ok=True)
            write_sample_grid(ema, pairs, out_dir / "samples" / f"step_{step:07d}.png", steps=cfg.sample_steps,
                              seed=cfg.seed)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        if cfg.max_minutes is not None and elapsed() - wall0 > 60 * cfg.max_minutes:
            stopped_early = step < cfg.steps
            break
    bar.close()
    if not _checkpoints(out_dir) or _checkpoints(out_dir)[-1][0] != step:
        checkpoint()
    meta = json.loads((out_dir / "diffusion" / "metadata.json").read_text(encoding="utf-8"))
    meta["stopped_early"] = stopped_early
    return meta


def _initialise_from(model: TokenConditionedUNet, directory: str) -> None:
    """Copy a saved model's weights AND token statistics into ``model`` (same architecture and token
    width required). The statistics come along because the token projection was trained on tokens
    standardised with them; the new data only moves the weights from there."""
    from saerad.diffusion.model import load_diffusion

    source = load_diffusion(directory)
    mine, theirs = (json.loads(json.dumps(dict(m.config), default=list)) for m in (model, source))
    differ = sorted(k for k in set(mine) | set(theirs) if not k.startswith("_") and mine.get(k) != theirs.get(k))
    if differ:
        raise ConfigError(f"cannot start from {directory}: its model differs in {', '.join(differ)}")
    model.load_state_dict(source.state_dict())
    log.info("initialised from %s", directory)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _config_json(cfg: DiffusionTrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def _check_compatible(saved: dict[str, Any], cfg: DiffusionTrainConfig) -> None:
    """A resume must not silently change what the checkpoint was trained as."""
    for key in ("resolution", "architecture", "batch_size", "seed", "cond_dropout", "lr", "warmup_steps", "init_from"):
        if saved.get(key) != getattr(cfg, key):
            raise ConfigError(
                f"cannot resume: the checkpoint was trained with {key}={saved.get(key)!r}, "
                f"now {getattr(cfg, key)!r} (use a new --out directory)"
            )


def export(ema: TokenConditionedUNet, directory: Path, cfg: DiffusionTrainConfig, pairs: PairedImages,
           state: dict[str, Any]) -> None:
    """Write the shipping model (EMA weights, fp16) with the metadata the bundle manifest reports."""
    device = next(ema.parameters()).device
    recent = state.get("recent_losses") or [math.nan]
    metadata = {
        "steps": int(state["step"]),
        "wall_seconds": round(float(state["wall_seconds"]), 1),
        "final_loss": float(np.mean(recent[-100:])),
        "final_loss_window": min(100, len(recent)),
        "device": str(device) if device.type != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
        "resolution": cfg.resolution,
        "architecture": cfg.architecture,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "ema_decay": cfg.ema_decay,
        "cond_dropout": cfg.cond_dropout,
        "autocast": "bf16" if device.type == "cuda" or cfg.cpu_bf16 else "fp32",
        "n_train_images": len(pairs),
        "parameters": sum(p.numel() for p in ema.parameters()),
        **cfg.meta,
    }
    save_diffusion(ema, directory, fp16=True, metadata=metadata)
