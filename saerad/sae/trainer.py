"""Training loop for every SAE architecture, kept apart from the models (it consumes any batch iterator).

The architecture (``TrainConfig.architecture``, one of :mod:`saerad.sae.architectures`) brings its
model, its training step and its constraints; the loop, schedules, checkpoints and metrics are one.

Schedules (docs/method.md#gated-sparse-autoencoder: Anthropic's April 2024 recipe without decoder-norm constraint):
- inputs are multiplied by a fixed scalar ``input_scale`` so that ``E||s x||^2 = d_in``; the
  exported SAE has the scale folded into its weights (it acts on raw class tokens);
- the sparsity coefficient warms up linearly from 0 over ``lam_warmup_fraction`` of the steps;
- Adam, a short linear learning-rate warm-up and a linear decay to 0 over the last
  ``lr_decay_fraction`` of the steps;
- optionally (``target_l0``) a controller that scales the coefficient by ``exp(s)`` and nudges
  ``s`` by ``l0_gain * min(1, (L0 - target) / target)`` every step (during the lambda warm-up only
  downwards). The lambda that gives a wanted sparsity differs between encoders and datasets; asking
  for the L0 directly saves a sweep. It tracks the TRAINING-batch L0 (augmented views included),
  which can sit a little below the held-out L0 that ``metrics.json`` reports;
- architectures that fix L0 by construction (BatchTopK, Matryoshka) have no coefficient: their
  ``k`` is the target L0, and the warm-up and controller do not apply.

Latents that have not fired for ``dead_window_steps`` count as dead, for the logged dead fraction and
for the architectures whose loss revives them (BatchTopK's AuxK term).

Checkpoints (model + optimizer + latent-firing counters + step) let a run resume EXACTLY: with the
index-determined batches of :class:`~saerad.sae.data.ResidentBatches` an interrupted and resumed run
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from saerad.devices import resolve_device
from saerad.errors import ConfigError
from saerad.fileio import atomic_write_text
from saerad.sae.architectures import get_architecture, sae_from_saved
from saerad.sae.base import SparseAutoencoder
from saerad.sae.steps import StepResult

log = logging.getLogger(__name__)
CALIBRATION_ROWS = 4096  # training vectors an architecture may fit its initial values to
_MAX_LOG_SCALE = 10.0  # the controller may move lambda by at most e^10 either way
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    """Optimisation settings. ``lam`` multiplies the architecture's sparsity penalty (gated: the
    decoder-norm-weighted gate activity; JumpReLU: L0); fixed-L0 architectures take ``target_l0`` as k."""

    architecture: str = "gated"
    steps: int = 5000
    batch_size: int = 4096
    lr: float = 1e-3
    lam: float = 2.0
    lam_warmup_fraction: float = 0.1
    lr_warmup_steps: int = 50
    lr_decay_fraction: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    dec_init_norm: float = 0.1
    compute_dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 elsewhere
    sparse_max_l0: float | None = 64.0  # use the sparse step when batch L0 <= min(this, d_sae/16)
    compile: bool = False  # torch.compile the elementwise kernels of the dense step
    grad_clip: float | None = None
    dead_window_steps: int = 1000  # a latent that has not fired for this many steps counts as dead
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 25
    target_l0: float | None = None  # adapt lambda so that the training-batch L0 tracks this
    l0_gain: float = 0.02  # controller step on log(lambda) per unit of relative L0 error

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # JSON round-trips give lists
        if self.steps <= 0 or self.batch_size <= 0:
            raise ConfigError("steps and batch size must be positive")
        if self.lam < 0 or self.lr <= 0:
            raise ConfigError("lambda must be >= 0 and the learning rate > 0")
        if self.compute_dtype != "auto" and self.compute_dtype not in _DTYPES:
            raise ConfigError(f"compute dtype must be auto or one of {sorted(_DTYPES)}")
        if self.target_l0 is not None and not (self.target_l0 > 0 and self.l0_gain > 0):
            raise ConfigError("the target L0 and the controller gain must be positive")
        if get_architecture(self.architecture).fixed_l0 and self.target_l0 is None:
            raise ConfigError(f"a {self.architecture} SAE needs a target L0 (its k)")


@dataclass
class TrainState:
    step: int = 0
    lam_log_scale: float = 0.0  # the target-L0 controller's state (0 without a target)
    history: list[dict[str, Any]] = field(default_factory=list)


def input_scale_for(tokens: torch.Tensor) -> float:
    """The scalar s with E||s x||^2 = d over the training vectors."""
    mean_sq = float(tokens.double().pow(2).sum(1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise ConfigError("training vectors are all zero or not finite")
    return math.sqrt(tokens.shape[1] / mean_sq)


class SAETrainer:
    """Owns the SAE under training (in normalised units), its optimizer and the schedules."""

    def __init__(
        self, sae: SparseAutoencoder, cfg: TrainConfig, *, input_scale: float, device: str | torch.device = "cpu"
    ):
        if sae.architecture != cfg.architecture:
            raise ConfigError(f"a {sae.architecture} SAE cannot train with settings for {cfg.architecture}")
        self.arch = get_architecture(cfg.architecture)
        self.device = resolve_device(device)
        self.sae = sae.to(self.device)
        self.cfg = cfg
        self.input_scale = float(input_scale)
        self.state = TrainState()
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=cfg.lr, betas=cfg.betas, fused=fused, foreach=None if fused else True
        )
        self.last_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=self.device)
        self._sparse_ok = True
        if cfg.compute_dtype == "auto":
            self.compute_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.compute_dtype = _DTYPES[cfg.compute_dtype]

    @classmethod
    def create(
        cls, train_tokens: torch.Tensor, d_sae: int, cfg: TrainConfig, *, device: str | torch.device = "cpu",
        meta: dict[str, Any] | None = None,
    ) -> SAETrainer:
        """A fresh trainer: input scale and ``b_dec`` (the mean) from the raw training vectors, then
        the architecture's own calibration on a random sample of them."""
        scale = input_scale_for(train_tokens)
        arch = get_architecture(cfg.architecture)
        options = {"k": cfg.target_l0} if arch.fixed_l0 else {}
        sae = arch.build(train_tokens.shape[1], d_sae, meta=dict(meta or {}), **options)
        gen = torch.Generator().manual_seed(cfg.seed)
        sae.init_weights(b_dec=train_tokens.double().mean(0).float() * scale, dec_norm=cfg.dec_init_norm, generator=gen)
        sample = torch.randperm(len(train_tokens), generator=gen)[:CALIBRATION_ROWS]
        sae.calibrate(train_tokens[sample].float() * scale, cfg.target_l0)
        return cls(sae, cfg, input_scale=scale, device=device)

    # ------------------------------------------------------------ schedules
    def lam_at(self, step: int) -> float:
        if self.arch.fixed_l0:
            return 0.0  # no penalty: k sets the sparsity
        warm = self.cfg.lam_warmup_fraction * self.cfg.steps
        ramp = min(1.0, step / warm) if warm > 0 else 1.0
        return self.cfg.lam * ramp * math.exp(self.state.lam_log_scale)

    def _control_l0(self, step: int, l0: float) -> None:
        """One controller update. While lambda warms up, L0 above the target is expected, so the
        controller only lowers lambda then (a too strong start would otherwise kill the latents)."""
        cfg = self.cfg
        if cfg.target_l0 is None or self.arch.fixed_l0:
            return
        error = min(1.0, (l0 - cfg.target_l0) / cfg.target_l0)  # bounded: L0 can be 10x the target early on
        if step < cfg.lam_warmup_fraction * cfg.steps:
            error = min(error, 0.0)
        scale = self.state.lam_log_scale + cfg.l0_gain * error
        self.state.lam_log_scale = min(_MAX_LOG_SCALE, max(-_MAX_LOG_SCALE, scale))

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps > 0 else 1.0
        decay_start = cfg.steps * (1.0 - cfg.lr_decay_fraction)
        if cfg.lr_decay_fraction > 0 and step >= decay_start:
            factor *= max(0.0, (cfg.steps - step) / (cfg.steps - decay_start))
        return cfg.lr * factor

    # ------------------------------------------------------------ one step
    def train_step(self, x_raw: torch.Tensor) -> StepResult:
        step = self.state.step
        x = x_raw.to(self.device, torch.float32) * self.input_scale
        sparse_cap = None
        if self.cfg.sparse_max_l0 is not None and self._sparse_ok:
            sparse_cap = min(self.cfg.sparse_max_l0, self.sae.cfg.d_sae / 16)
        kwargs = {"compute_dtype": self.compute_dtype, "compile": self.cfg.compile, "dead": self.dead_latents()}
        train_step = self.arch.train_step
        try:
            result = train_step(self.sae, x, self.lam_at(step), sparse_max_l0=sparse_cap, **kwargs)
        except (RuntimeError, NotImplementedError) as exc:
            if sparse_cap is None:
                raise
            # A backend without the CSR kernels: the dense step computes the same gradients.
            log.warning("sparse SAE step unavailable on %s (%s); using the dense step", self.device, exc)
            self._sparse_ok = False
            result = train_step(self.sae, x, self.lam_at(step), sparse_max_l0=None, **kwargs)
        self.sae.constrain_gradients()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.cfg.grad_clip)
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.sae.constrain_weights()
        self.state.step = step + 1
        self.last_fired[result.fired] = self.state.step
        self._control_l0(step, result.l0)
        return result

    def dead_latents(self) -> torch.Tensor | None:
        """Latents that have not fired in the last ``dead_window_steps`` (None before a full window)."""
        if self.state.step < self.cfg.dead_window_steps:
            return None
        return self.last_fired <= self.state.step - self.cfg.dead_window_steps

    def dead_fraction(self) -> float:
        """Latents that have not fired in the last ``dead_window_steps`` (0 before a full window)."""
        dead = self.dead_latents()
        return 0.0 if dead is None else float(dead.float().mean())

    def fit(
        self, batches: Iterator[torch.Tensor], *, checkpoint_root: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Train until ``cfg.steps``, logging every ``log_every`` steps and checkpointing."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.state.step, desc="train-sae", disable=not progress, dynamic_ncols=True)
        try:
            while self.state.step < cfg.steps:
                x = next(batches)
                result = self.train_step(x)
                step = self.state.step
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    record = self._log_record(x, result)
                    self.state.history.append(record)
                    bar.set_postfix(loss=f"{record['total']:.3g}", L0=f"{record['l0']:.1f}", EV=f"{record['ev']:.3f}")
                if checkpoint_root is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                    self.save_checkpoint(checkpoint_root)
        finally:
            bar.close()
        return self.state.history

    def _log_record(self, x_raw: torch.Tensor, result: StepResult) -> dict[str, Any]:
        """Training-batch numbers (EV relative to the batch's own variance) for the progress bar."""
        x = x_raw.to(self.device, torch.float32) * self.input_scale
        var = float((x - x.mean(0)).pow(2).sum(1).mean())
        losses = {k: float(v) for k, v in result.losses.items()}
        return {
            "step": self.state.step, **losses, "l0": result.l0,
            "ev": 1.0 - losses["recon"] / var if var > 0 else float("nan"),
            "lam": self.lam_at(self.state.step - 1), "lr": self.lr_at(self.state.step - 1),
            "dead_fraction": self.dead_fraction(), "sparse_step": result.sparse,
        }

    # ------------------------------------------------------------ export
    def export(self) -> SparseAutoencoder:
        """A CPU copy of the SAE with the input scale folded in: it acts on raw class tokens."""
        sae = copy.deepcopy(self.sae).to("cpu").float()  # deepcopy also copies cfg (meta is edited)
        return sae.fold_input_scale(self.input_scale)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, root: str | os.PathLike) -> Path:
        """Write ``root/step-N`` (via a temp dir + rename), point ``root/latest`` at it, prune."""
        from safetensors.torch import save_file

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=root))
        tensors = {**self.sae.state_tensors(), "last_fired": self.last_fired.cpu().contiguous()}
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {
            "step": self.state.step, "input_scale": self.input_scale, "train_config": asdict(self.cfg),
            "sae_config": self.sae.cfg.to_json(), "history": self.state.history,
            "lam_log_scale": self.state.lam_log_scale,
        }
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        final = root / f"step-{self.state.step:09d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / "latest", final.name)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def latest_checkpoint(root: str | os.PathLike) -> Path | None:
        pointer = Path(root) / "latest"
        if not pointer.is_file():
            return None
        path = Path(root) / pointer.read_text(encoding="utf-8").strip()
        return path if (path / "trainer.json").is_file() else None

    @classmethod
    def restore(cls, checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu") -> SAETrainer:
        """Rebuild a trainer from a checkpoint directory written by :meth:`save_checkpoint`."""
        from safetensors.torch import load_file

        checkpoint = Path(checkpoint)
        meta = json.loads((checkpoint / "trainer.json").read_text(encoding="utf-8"))
        cfg = TrainConfig(**meta["train_config"])
        tensors = load_file(str(checkpoint / "model.safetensors"))
        sae = sae_from_saved(meta["sae_config"], tensors)
        trainer = cls(sae, cfg, input_scale=meta["input_scale"], device=device)
        trainer.last_fired.copy_(tensors["last_fired"])
        state = torch.load(checkpoint / "optimizer.pt", map_location=trainer.device, weights_only=True)
        trainer.optimizer.load_state_dict(state)
        trainer.state = TrainState(step=int(meta["step"]), history=list(meta["history"]),
                                   lam_log_scale=float(meta.get("lam_log_scale", 0.0)))
        return trainer
