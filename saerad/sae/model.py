"""The gated sparse autoencoder, without a decoder-norm constraint (docs/method.md#gated-sparse-autoencoder).

Shared conventions (weight layout, raw-token units, persistence) are :mod:`saerad.sae.base`'s.

Loss (one consistent choice, documented in :meth:`GatedSAE.training_forward`): the auxiliary
reconstruction and the sparsity weight both use DETACHED decoder values, so ``W_dec``/``b_dec`` learn
only from the main reconstruction and the gate learns from the auxiliary term. This is the
formulation of the original gated SAE (frozen decoder copies in the aux term) carried over to the
sparsity weight, which is what keeps the unconstrained scales consistent; it is also the 14·d·m
FLOP/sample step of the cost model (no decoder weight-gradient from the aux path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from saerad.errors import ConfigError
from saerad.sae.base import SAEConfig, SparseAutoencoder


def sae_width(d_in: int, expansion: float) -> int:
    """Number of SAE features for ``d_in``-dimensional tokens and an expansion factor (0.5 allowed)."""
    width = round(d_in * expansion)
    if width <= 0:
        raise ConfigError(f"expansion {expansion} gives no SAE features for {d_in}-d tokens")
    return width


@dataclass
class GatedSAEConfig(SAEConfig):
    """Architecture of a gated SAE (no fields beyond the shape)."""

    architecture: ClassVar[str] = "gated"


class GatedSAE(SparseAutoencoder):
    """Gated SAE with a JumpReLU-form encoder at inference (one matmul)."""

    config_class = GatedSAEConfig
    tensor_names = ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")

    def __init__(self, cfg: GatedSAEConfig) -> None:
        super().__init__(cfg)
        m = cfg.d_sae
        self.b_gate = nn.Parameter(torch.zeros(m))
        self.b_mag = nn.Parameter(torch.zeros(m))
        self.r_mag = nn.Parameter(torch.zeros(m))

    # ---------------------------------------------------------------- inference
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class tokens ``(B, d_in)`` -> features ``(B, d_sae)``, all >= 0.

        JumpReLU form of the gated encoder: ``f = ReLU(exp(r) z + b_mag) * 1[z > -b_gate]``.
        """
        z = self.pre_activation(x)
        mag = torch.relu(torch.addcmul(self.b_mag, z, self.r_mag.exp()))
        return mag * (z > -self.b_gate)

    def feature_gains(self) -> torch.Tensor:
        """An active feature's activation is ``exp(r_i) z_i + b_mag_i``."""
        return self.r_mag.exp()

    # ---------------------------------------------------------------- training loss
    def training_forward(
        self, x: torch.Tensor, coef: float, dead: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Named loss terms for a batch (autograd reference; the lean steps of
        :mod:`saerad.sae.steps` match it) and ``ReLU(pi_gate)``, whose support is the open gates.

        ``total = recon + coef * sparsity + aux`` with per-sample sums averaged over the batch
        (``dead`` is not used: the auxiliary term already trains closed gates):

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
        terms = {"total": recon + coef * sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}
        return terms, a
