"""BatchTopK and Matryoshka BatchTopK SAEs (docs/method.md#other-sae-architectures).

BatchTopK (Bussmann, Leask and Nanda, 2024, *BatchTopK Sparse Autoencoders*, arXiv:2412.06410):
``a = ReLU((x - b_dec) W_enc + b_enc)``; in training the ``round(k * B)`` largest activations of
the whole batch are kept (so L0 is ``k`` on average, more on busy images, fewer on plain ones) and
the loss is the reconstruction error plus the AuxK term of Gao et al. (2024, *Scaling and
Evaluating Sparse Autoencoders*, arXiv:2406.04093): the residual is reconstructed from the top
``aux_k`` activations of the dead latents, which gives them a gradient back to life. Decoder rows
have unit norm (:class:`~saerad.sae.base.UnitNormDecoder`).

Inference cannot depend on the other images of a batch, so it uses one global threshold ``theta``:
``f = a * 1[a > theta]`` (a JumpReLU), with ``theta`` an exponential moving average of the smallest
activation the batch top-k kept, estimated during training (:meth:`BatchTopKSAE.observe`).

Matryoshka BatchTopK (Bussmann et al., 2025, *Learning Multi-Level Features with Matryoshka Sparse
Autoencoders*, arXiv:2503.17547; Nabeshima, 2024): the same encoder, but the loss averages the
reconstruction errors of nested prefixes of the dictionary (by default the first m/16, m/8, m/4,
m/2 and all m latents), so the first latents must reconstruct on their own and learn the general
features, later ones the refinements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from saerad.sae.base import SAEConfig, SparseAutoencoder, UnitNormDecoder, auxk_loss


@dataclass
class BatchTopKConfig(SAEConfig):
    """``k``: mean active latents per vector in training (any positive number, not only integers);
    ``aux_k``: dead latents the AuxK term may use per vector (0: ``d_in // 2``, Gao et al.'s
    heuristic); ``aux_coef``: its weight; ``threshold_decay``: of the inference threshold's average."""

    architecture: ClassVar[str] = "batchtopk"

    k: float = 16.0
    aux_k: int = 0
    aux_coef: float = 1 / 32
    threshold_decay: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in (0, d_sae = {self.d_sae}], got {self.k}")
        if self.aux_k < 0 or self.aux_coef < 0 or not 0 <= self.threshold_decay < 1:
            raise ValueError("aux_k and aux_coef must be >= 0 and the threshold decay in [0, 1)")


class BatchTopKSAE(UnitNormDecoder, SparseAutoencoder):
    """BatchTopK SAE: batch top-k in training, a learned global threshold at inference."""

    config_class = BatchTopKConfig
    tensor_names = ("W_enc", "W_dec", "b_dec", "b_enc", "threshold")

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet (plain ReLU)

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """``ReLU(z + b_enc)``: what both the batch top-k and the threshold select from."""
        return torch.relu(self.pre_activation(x) + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        a = self.activations(x)
        return a * (a > self.threshold)

    # ---------------------------------------------------------------- training
    def batch_top_k(self, a: torch.Tensor) -> torch.Tensor:
        """Keep the ``round(k * B)`` largest entries of the whole batch, zero the rest."""
        keep = min(a.numel(), max(1, round(self.cfg.k * a.shape[0])))
        flat = a.flatten()
        values, index = flat.topk(keep, sorted=False)
        return torch.zeros_like(flat).scatter(0, index, values).view_as(a)

    def training_forward(
        self, x: torch.Tensor, coef: float = 0.0, dead: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``total = fit + aux_coef * auxk``; ``coef`` is unused (``k`` sets the sparsity).

        - recon = ||x - (f W_dec + b_dec)||^2 (per-sample sum, batch mean), ``f`` the batch top-k;
        - fit   = recon here (Matryoshka: the mean over its prefixes);
        - auxk  = ||e - a_dead W_dec||^2 / ||e - mean(e)||^2 with ``e`` the detached residual and
          ``a_dead`` the top ``aux_k`` activations of the ``dead`` latents of each row (0 when none).
        """
        a = self.activations(x)
        codes = self.batch_top_k(a)
        terms, x_hat = self.fit_terms(x, codes)
        aux = auxk_loss(a, (x - x_hat).detach(), dead, self.W_dec, self.cfg.aux_k or self.cfg.d_in // 2)
        fit = terms.get("prefix_recon", terms["recon"])
        return {"total": fit + self.cfg.aux_coef * aux, **terms, "auxk": aux}, codes

    def fit_terms(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x_hat = self.decode(codes)
        return {"recon": (x_hat - x).pow(2).sum(-1).mean()}, x_hat

    @torch.no_grad()
    def observe(self, codes: torch.Tensor) -> None:
        """Move the inference threshold toward the smallest activation this batch's top-k kept."""
        kept = codes[codes > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min().to(self.threshold.dtype)
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, 1.0 - self.cfg.threshold_decay)


def matryoshka_prefixes(d_sae: int, levels: int = 5) -> list[int]:
    """Nested prefix sizes m/16, m/8, m/4, m/2, m (fewer when m is too small to halve that often)."""
    return sorted({max(1, round(d_sae / 2**j)) for j in range(levels)})


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """``prefixes``: the nested dictionary sizes whose reconstructions are averaged (strictly
    increasing, the last one ``d_sae``; empty: :func:`matryoshka_prefixes`)."""

    architecture: ClassVar[str] = "matryoshka"

    prefixes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prefixes = [int(p) for p in self.prefixes] or matryoshka_prefixes(self.d_sae)
        if self.prefixes[-1] != self.d_sae or any(b <= a for a, b in zip([0, *self.prefixes], self.prefixes)):
            raise ValueError(f"prefixes must increase strictly from >= 1 up to d_sae = {self.d_sae}, got {self.prefixes}")


class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK SAE: one dictionary whose prefixes are dictionaries too."""

    config_class = MatryoshkaConfig

    def fit_terms(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``recon`` of the whole dictionary and ``prefix_recon``, the mean over the prefixes."""
        partial, start, errors = self.b_dec.expand_as(x), 0, []
        for end in self.cfg.prefixes:
            partial = partial + codes[:, start:end] @ self.W_dec[start:end]
            errors.append((partial - x).pow(2).sum(-1).mean())
            start = end
        return {"recon": errors[-1], "prefix_recon": torch.stack(errors).mean()}, partial
