"""The gated sparse autoencoder, without a decoder-norm constraint (docs/method.md#gated-sparse-autoencoder).

Conventions (shared with the dictionary, composer and diffusion stages):

- ``W_enc`` is ``(d_in, d_sae)``, ``W_dec`` is ``(d_sae, d_in)``: ROW ``i`` of ``W_dec`` is feature
  ``i``'s direction in class-token space, so an intervention is ``c + (f_new - f) @ W_dec``.
- Saved weights act on RAW class tokens. Training runs on ``s * x`` with a scalar ``s`` chosen so
  that ``E||s x||^2 = d_in``; :meth:`GatedSAE.fold_input_scale` rewrites the weights so that the
  features ``f`` are unchanged and reconstructions come out in raw units (see its docstring).

Loss (one consistent choice, documented in ``docs`` of :meth:`GatedSAE.losses`): the auxiliary
reconstruction and the sparsity weight both use DETACHED decoder values, so ``W_dec``/``b_dec`` learn
only from the main reconstruction and the gate learns from the auxiliary term. This is the
formulation of the original gated SAE (frozen decoder copies in the aux term) carried over to the
sparsity weight, which is what keeps the unconstrained scales consistent; it is also the 14·d·m
FLOP/sample step of the cost model (no decoder weight-gradient from the aux path).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from saerad.errors import BundleError, ConfigError
from saerad.fileio import atomic_path, atomic_write_text

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae_config.json"
PARAM_NAMES = ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")


def sae_width(d_in: int, expansion: float) -> int:
    """Number of SAE features for ``d_in``-dimensional tokens and an expansion factor (0.5 allowed)."""
    width = round(d_in * expansion)
    if width <= 0:
        raise ConfigError(f"expansion {expansion} gives no SAE features for {d_in}-d tokens")
    return width


@dataclass
class GatedSAEConfig:
    """Architecture of a gated SAE. ``meta`` records provenance (encoder spec, input scale...)."""

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
        return {"architecture": "gated", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GatedSAEConfig:
        arch = data.get("architecture", "gated")
        if arch != "gated":
            raise BundleError(f"SAE architecture {arch!r} is not supported (expected 'gated')")
        try:
            return cls(d_in=int(data["d_in"]), d_sae=int(data["d_sae"]), meta=dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"invalid SAE config: {exc}") from exc


class GatedSAE(nn.Module):
    """Gated SAE with a JumpReLU-form encoder at inference (one matmul)."""

    def __init__(self, cfg: GatedSAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, m = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d, m))
        self.W_dec = nn.Parameter(torch.zeros(m, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.b_gate = nn.Parameter(torch.zeros(m))
        self.b_mag = nn.Parameter(torch.zeros(m))
        self.r_mag = nn.Parameter(torch.zeros(m))

    # ---------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(
        self, *, b_dec: torch.Tensor | None = None, dec_norm: float = 0.1, generator: torch.Generator | None = None
    ) -> GatedSAE:
        """Design-notes init: random decoder rows of norm ``dec_norm``, ``W_enc = W_dec^T``, zero
        biases and ``r_mag``, ``b_dec`` at the data mean (passed in, in training units)."""
        w = torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator)
        w *= dec_norm / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        for p in (self.b_gate, self.b_mag, self.r_mag):
            p.zero_()
        self.b_dec.copy_(b_dec if b_dec is not None else torch.zeros(self.cfg.d_in))
        return self

    # ---------------------------------------------------------------- inference
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``z = (x - b_dec) W_enc``: the one matmul shared by the gate and the magnitude."""
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class tokens ``(B, d_in)`` -> features ``(B, d_sae)``, all >= 0.

        JumpReLU form of the gated encoder: ``f = ReLU(exp(r) z + b_mag) * 1[z > -b_gate]``.
        """
        z = self.pre_activation(x)
        mag = torch.relu(torch.addcmul(self.b_mag, z, self.r_mag.exp()))
        return mag * (z > -self.b_gate)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ---------------------------------------------------------------- training loss
    def losses(self, x: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
        """Named loss terms for a batch (autograd reference; the trainer's fast steps match it).

        ``total = recon + lam * sparsity + aux`` with per-sample sums averaged over the batch:

        - recon    = ||x - (f W_dec + b_dec)||^2
        - sparsity = sum_i ReLU(pi_gate)_i * ||W_dec[i]||   (decoder norm detached)
        - aux      = ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2
        """
        z = self.pre_activation(x)
        pi_gate = z + self.b_gate
        f = (pi_gate > 0) * torch.relu(torch.addcmul(self.b_mag, z, self.r_mag.exp()))
        a = torch.relu(pi_gate)
        w_dec = self.W_dec.detach()
        x_hat = f @ self.W_dec + self.b_dec
        x_aux = a @ w_dec + self.b_dec.detach()
        recon = (x_hat - x).pow(2).sum(-1).mean()
        sparsity = (a @ w_dec.norm(dim=1)).mean()
        aux = (x_aux - x).pow(2).sum(-1).mean()
        return {"total": recon + lam * sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}

    # ---------------------------------------------------------------- input scale
    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> GatedSAE:
        """Make weights trained on ``scale * x`` act on raw ``x`` (in place).

        With ``W_enc' = s W_enc`` and ``b_dec' = b_dec / s``: ``(x - b_dec') W_enc' = (s x - b_dec) W_enc``,
        so the pre-activations and features are identical; ``W_dec' = W_dec / s`` puts the
        reconstruction ``f W_dec' + b_dec'`` in raw units (it equals the normalised one divided by s).
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
        return {name: getattr(self, name).detach().float().cpu().contiguous() for name in PARAM_NAMES}

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``sae.safetensors`` + ``sae_config.json`` atomically (each via temp + rename)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(self.state_tensors(), str(tmp), metadata={"format": "pt"})
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.cfg.to_json(), indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> GatedSAE:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise BundleError(f"{directory} has no {CONFIG_FILE} + {WEIGHTS_FILE}: not a saved SAE")
        try:
            cfg = GatedSAEConfig.from_json(json.loads(cfg_path.read_text(encoding="utf-8")))
            tensors = load_file(str(w_path))
        except (json.JSONDecodeError, SafetensorError, OSError) as exc:
            raise BundleError(f"cannot read SAE in {directory}: {exc}") from exc
        sae = cls(cfg)
        sae.load_tensors(tensors)
        return sae.to(device)

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy named tensors in, checking names and shapes (a mismatch is a broken bundle)."""
        missing = set(PARAM_NAMES) - set(tensors)
        if missing:
            raise BundleError(f"SAE weights lack {sorted(missing)}")
        for name in PARAM_NAMES:
            param = getattr(self, name)
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise BundleError(
                    f"SAE weight {name} has shape {tuple(tensors[name].shape)}, config expects {tuple(param.shape)}"
                )
            param.copy_(tensors[name])

