"""JumpReLU SAE trained on L0 directly (docs/method.md#other-sae-architectures).

Rajamanoharan et al. (2024, *Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse
Autoencoders*, arXiv:2407.14435):

```
pre  = (x - b_dec) W_enc + b_enc
f    = pre * H(pre - theta)            theta = exp(log_threshold) > 0, one per latent
L    = ||x - (f W_dec + b_dec)||^2 + lambda * sum_i H(pre_i - theta_i)
```

The Heaviside step has no useful gradient, so theta learns through straight-through estimators
with a rectangle kernel ``K(u) = 1[|u| < 1/2]`` of bandwidth ``eps``: ``d f / d theta = -(theta /
eps) K((pre - theta) / eps)`` and ``d H / d theta = -(1 / eps) K((pre - theta) / eps)``; ``pre``
gets the ordinary gradient of ``f`` and none from the L0 term. Decoder rows have unit norm (the
L0 penalty cannot be dodged by rescaling, but the bandwidth is in activation units, which the
constraint fixes). The bandwidth 0.05 and the floor 0.01 of the initial thresholds are SAELens's
defaults for inputs scaled to ``E||x||^2 = d``, the scaling saerad trains with. With a target L0 the
thresholds start where the training vectors give that L0 (:meth:`JumpReLUSAE.calibrate`), and the
trainer's lambda warm-up and target-L0 controller steer ``lambda`` as they do the gated SAE's.

A latent whose threshold rose above all its pre-activations gets no gradient at all and stays dead
(a fifth of the latents on nih-cxr14 class tokens without help). Not in the paper: the AuxK term that
BatchTopK uses (:func:`~saerad.sae.base.auxk_loss`, on ``ReLU(pre)`` of the latents the trainer
counts as dead) points dead latents at what the live ones miss, so they come back useful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from saerad.sae.base import SAEConfig, SparseAutoencoder, UnitNormDecoder, auxk_loss


@dataclass
class JumpReLUConfig(SAEConfig):
    """``bandwidth``: width of the straight-through kernel; ``init_threshold``: theta at init (the
    floor of the calibrated ones); ``aux_k``, ``aux_coef``: the AuxK term's as in BatchTopK's config."""

    architecture: ClassVar[str] = "jumprelu"

    bandwidth: float = 0.05
    init_threshold: float = 0.01
    aux_k: int = 0
    aux_coef: float = 1 / 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.bandwidth > 0 and self.init_threshold > 0) or self.aux_k < 0 or self.aux_coef < 0:
            raise ValueError("the bandwidth and the initial threshold must be positive, aux_k and aux_coef >= 0")


def _window(pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``K((pre - theta) / eps) / eps`` with the rectangle kernel."""
    return ((pre - theta).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - theta)``; d/d theta by the straight-through estimator above."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        g_theta = -(theta * _window(pre, theta, ctx.bandwidth) * grad).sum(0)
        return grad * (pre > theta), g_theta, None


class _Step(torch.autograd.Function):
    """``H(pre - theta)``; no gradient to ``pre``, d/d theta by the straight-through estimator."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, theta = ctx.saved_tensors
        return None, -(_window(pre, theta, ctx.bandwidth) * grad).sum(0), None


class JumpReLUSAE(UnitNormDecoder, SparseAutoencoder):
    """JumpReLU SAE: a learned threshold per latent, trained with an L0 penalty."""

    config_class = JumpReLUConfig
    tensor_names = ("W_enc", "W_dec", "b_dec", "b_enc", "log_threshold")

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.init_threshold)))

    @torch.no_grad()
    def init_weights(self, *, b_dec=None, dec_norm: float = 1.0, generator=None) -> JumpReLUSAE:
        super().init_weights(b_dec=b_dec, dec_norm=dec_norm, generator=generator)
        self.log_threshold.fill_(math.log(self.cfg.init_threshold))
        return self

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, target_l0: float | None) -> None:
        """Start every threshold at its latent's ``1 - target_l0 / d_sae`` quantile on ``x`` (at least
        ``init_threshold``), so training starts at the wanted sparsity: thresholds move slowly (a
        step of the learning rate in log units), and a controller waiting for them would overshoot."""
        if target_l0 is None or len(x) == 0:
            return
        level = min(1.0, max(0.0, 1.0 - target_l0 / self.cfg.d_sae))
        pre = self.pre_activation(x) + self.b_enc
        theta = pre.float().quantile(level, dim=0).clamp_min(self.cfg.init_threshold)
        self.log_threshold.copy_(theta.log())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activation(x) + self.b_enc
        return pre * (pre > self.log_threshold.exp())

    def training_forward(
        self, x: torch.Tensor, coef: float, dead: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``total = recon + coef * l0 + aux_coef * auxk``: recon as every architecture's, ``l0`` the
        mean number of active latents per vector, ``auxk`` the AuxK term on ``ReLU(pre)`` of the
        ``dead`` latents (:func:`~saerad.sae.base.auxk_loss`; 0 when none)."""
        pre = self.pre_activation(x) + self.b_enc
        theta = self.log_threshold.exp()
        f = _JumpReLU.apply(pre, theta, self.cfg.bandwidth)
        x_hat = self.decode(f)
        recon = (x_hat - x).pow(2).sum(-1).mean()
        l0 = _Step.apply(pre, theta, self.cfg.bandwidth).sum(-1).mean()
        aux = auxk_loss(torch.relu(pre), (x - x_hat).detach(), dead, self.W_dec, self.cfg.aux_k or self.cfg.d_in // 2)
        return {"total": recon + coef * l0 + self.cfg.aux_coef * aux, "recon": recon, "l0": l0, "auxk": aux}, f
