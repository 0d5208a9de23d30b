"""What every SAE architecture shares: the config, the decoder, input-scale folding, persistence.

Conventions every consumer relies on (dictionary, composer, attribution, diffusion interventions):

- ``W_enc`` is ``(d_in, d_sae)``, ``W_dec`` is ``(d_sae, d_in)``: ROW ``i`` of ``W_dec`` is feature
  ``i``'s direction in class-token space, so ``x_hat = f @ W_dec + b_dec`` and an intervention is
  ``c + (f_new - f) @ W_dec``;
- ``encode`` gives features ``>= 0``, a feature being active when ``> 0``; every encoder starts with
  the one matmul ``z = (x - b_dec) W_enc`` and, while feature ``i`` is active, its activation is
  ``feature_gains()[i] * z_i`` plus a constant (what attribution maps explain);
- saved weights act on RAW class tokens: training runs on ``s * x`` with a scalar ``s`` making
  ``E||s x||^2 = d_in``, and :meth:`SparseAutoencoder.fold_input_scale` rewrites the weights so that
  the features are unchanged and reconstructions come out in raw units.

A saved SAE is ``sae_config.json`` (its ``architecture`` names the class; files written before
there was more than one architecture have none and are gated SAEs) plus ``sae.safetensors``.
:func:`saerad.sae.architectures.load_sae` reads any of them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from saerad.errors import BundleError
from saerad.fileio import atomic_path, atomic_write_text, read_model_dir

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae_config.json"
LEGACY_ARCHITECTURE = "gated"  # what a config without an "architecture" field holds


@dataclass
class SAEConfig:
    """Shape of an SAE; ``meta`` records provenance (encoder spec, input scale, training settings).
    Subclasses add their architecture's own fields (all with defaults)."""

    architecture: ClassVar[str] = ""

    d_in: int
    d_sae: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")

    @property
    def expansion(self) -> float:
        return self.d_sae / self.d_in

    def to_json(self) -> dict[str, Any]:
        return {"architecture": self.architecture, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SAEConfig:
        arch = data.get("architecture", LEGACY_ARCHITECTURE)
        if arch != cls.architecture:
            raise BundleError(f"SAE config is for architecture {arch!r}, not {cls.architecture!r}")
        try:
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"invalid {arch} SAE config: {exc}") from exc


def architecture_of(config: dict[str, Any]) -> str:
    """The architecture a saved config names (a config from before the field existed is gated)."""
    return str(config.get("architecture", LEGACY_ARCHITECTURE))


class SparseAutoencoder(nn.Module):
    """Base of every architecture: ``W_enc``, ``W_dec``, ``b_dec`` and the shared machinery.

    A subclass sets ``config_class`` and ``tensor_names`` (every parameter and buffer that is saved),
    creates its own parameters, and implements :meth:`encode` and :meth:`training_forward`.
    """

    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    tensor_names: ClassVar[tuple[str, ...]] = ("W_enc", "W_dec", "b_dec")

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        d, m = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d, m))
        self.W_dec = nn.Parameter(torch.zeros(m, d))
        self.b_dec = nn.Parameter(torch.zeros(d))

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    # ---------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(
        self, *, b_dec: torch.Tensor | None = None, dec_norm: float = 0.1, generator: torch.Generator | None = None
    ) -> SparseAutoencoder:
        """Random decoder rows of norm ``dec_norm``, ``W_enc = W_dec^T``, every other parameter zero,
        ``b_dec`` at the data mean (passed in, in training units). Subclasses add their own."""
        w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator)
        w *= dec_norm / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        for name, param in self.named_parameters():
            if name not in ("W_enc", "W_dec", "b_dec"):
                param.zero_()
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_dec.copy_(b_dec if b_dec is not None else torch.zeros(self.cfg.d_in))
        return self

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, target_l0: float | None) -> None:
        """After :meth:`init_weights`: fit data-dependent initial values to training vectors ``x``
        (training units) and the L0 the run aims at (none by default)."""

    # ---------------------------------------------------------------- inference
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``z = (x - b_dec) W_enc``: the one matmul every encoder starts from."""
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class tokens ``(B, d_in)`` -> features ``(B, d_sae)``, all >= 0."""
        raise NotImplementedError

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def feature_gains(self) -> torch.Tensor:
        """``(d_sae,)``: the slope of each active feature's activation in its ``z_i``."""
        return torch.ones(self.cfg.d_sae, dtype=self.W_enc.dtype, device=self.W_enc.device)

    # ---------------------------------------------------------------- training
    def training_forward(
        self, x: torch.Tensor, coef: float, dead: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Named loss terms (scalar ``"total"`` among them) and the training-time codes ``(B, d_sae)``
        whose support (``> 0``) counts as the latents that fired. ``coef`` is the architecture's
        sparsity coefficient (ignored by those that fix L0 by construction); ``dead`` marks latents
        that have not fired for a while (used by those with a dead-latent auxiliary loss)."""
        raise NotImplementedError

    def losses(self, x: torch.Tensor, coef: float, dead: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The readable autograd loss the fast training steps are checked against."""
        return self.training_forward(x, coef, dead)[0]

    @torch.no_grad()
    def observe(self, codes: torch.Tensor) -> None:
        """After a training step: update state estimated from the batch's codes (none by default)."""

    @torch.no_grad()
    def constrain_gradients(self) -> None:
        """Before the optimizer step: project gradients onto the constraint set (none by default)."""

    @torch.no_grad()
    def constrain_weights(self) -> None:
        """After the optimizer step: put the weights back on the constraint set (none by default)."""

    # ---------------------------------------------------------------- input scale
    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> SparseAutoencoder:
        """Make weights trained on ``scale * x`` act on raw ``x`` (in place).

        With ``W_enc' = s W_enc`` and ``b_dec' = b_dec / s``: ``(x - b_dec') W_enc' = (s x - b_dec) W_enc``,
        so ``z`` (and everything each encoder adds after it: biases, thresholds) and the features are
        identical; ``W_dec' = W_dec / s`` puts ``f W_dec' + b_dec'`` in raw units (the normalised
        reconstruction divided by s).
        """
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"input scale must be a positive number, got {scale}")
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)
        self.cfg.meta["input_scale_folded"] = float(self.cfg.meta.get("input_scale_folded", 1.0)) * scale
        return self

    # ---------------------------------------------------------------- persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().float().cpu().contiguous() for name in self.tensor_names}

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``sae.safetensors`` + ``sae_config.json`` atomically (each via temp + rename)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(self.state_tensors(), str(tmp), metadata={"format": "pt"})
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.cfg.to_json(), indent=2))

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
        sae = cls(cls.config_class.from_json(config))
        sae.load_tensors(tensors)
        return sae

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Load a saved SAE of exactly this class (any class: ``saerad.sae.architectures.load_sae``)."""
        config, tensors = read_saved(directory)
        return cls.from_saved(config, tensors).to(device)

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy named tensors in, checking names and shapes (a mismatch is a broken bundle)."""
        missing = set(self.tensor_names) - set(tensors)
        if missing:
            raise BundleError(f"SAE weights lack {sorted(missing)}")
        for name in self.tensor_names:
            target = getattr(self, name)
            if tuple(tensors[name].shape) != tuple(target.shape):
                raise BundleError(
                    f"SAE weight {name} has shape {tuple(tensors[name].shape)}, config expects {tuple(target.shape)}"
                )
            target.copy_(tensors[name])


def read_saved(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config dict and tensors of a saved SAE (safetensors: nothing is unpickled)."""
    return read_model_dir(directory, CONFIG_FILE, WEIGHTS_FILE, "SAE")


class UnitNormDecoder:
    """Mixin: decoder rows of unit norm, as TopK (Gao et al. 2024) and JumpReLU (Rajamanoharan et
    al. 2024) SAEs train them. Activations then measure each feature's share of the reconstruction
    on one scale, which a global threshold (BatchTopK) or an L0 penalty needs. Before the optimizer
    step the gradient's component along each row is removed; after it the rows are renormalised.
    (Folding the input scale leaves rows of norm ``1 / s``: the constraint holds in training units.)"""

    W_dec: nn.Parameter

    @torch.no_grad()
    def init_weights(self, *, b_dec=None, dec_norm: float = 1.0, generator=None):
        """As the base init, with unit decoder rows whatever ``dec_norm`` asks."""
        return super().init_weights(b_dec=b_dec, dec_norm=1.0, generator=generator)

    @torch.no_grad()
    def constrain_gradients(self) -> None:
        grad = self.W_dec.grad
        if grad is not None:
            rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            grad.sub_((grad * rows).sum(1, keepdim=True) * rows)

    @torch.no_grad()
    def constrain_weights(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


def auxk_loss(
    acts: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None, w_dec: torch.Tensor, aux_k: int
) -> torch.Tensor:
    """The AuxK term of Gao et al. (2024, arXiv:2406.04093): how well the top ``aux_k`` activations
    ``acts`` (B, m) of the ``dead`` latents of each row reconstruct the detached ``residual``,
    ``||e - a_dead W_dec||^2 / ||e - mean(e)||^2``; 0 when no latent is dead. It gives dead latents a
    gradient that points them at what the live ones miss."""
    n_dead = int(dead.sum()) if dead is not None else 0
    if n_dead == 0:
        return residual.new_zeros(())
    values, index = torch.where(dead, acts, torch.zeros_like(acts)).topk(min(aux_k, n_dead), dim=1, sorted=False)
    x_aux = torch.zeros_like(acts).scatter(1, index, values) @ w_dec
    spread = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    return ((residual - x_aux).pow(2).sum(-1).mean() / spread).nan_to_num(0.0)
