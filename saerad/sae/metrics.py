"""SAE quality metrics, always computed on held-out vectors (docs/method.md#gated-sparse-autoencoder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from saerad.sae.base import SparseAutoencoder


@dataclass
class SAEMetrics:
    """``explained_variance`` = 1 - sum||x - x_hat||^2 / sum||x - mean||^2; ``l0`` = mean active
    latents per vector; ``dead_fraction`` = latents never active on these vectors; ``shrinkage`` =
    gamma = E||x_hat||^2 / E<x, x_hat> (relative reconstruction bias; < 1 means shrunk)."""

    explained_variance: float
    l0: float
    dead_fraction: float
    shrinkage: float
    n: int
    mse: float  # mean over vectors of ||x - x_hat||^2 (raw units)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> SAEMetrics:
    """Metrics of ``sae`` on raw vectors ``x`` (N, d_in), accumulated in float64."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("evaluate_sae needs a non-empty (N, d) tensor")
    device = sae.W_enc.device
    mean = x.double().mean(0).to(device)
    sse = tot = xhat_sq = dot = active = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, torch.float32)
        f = sae.encode(xb)
        x_hat = sae.decode(f).double()
        xb = xb.double()
        sse += float((xb - x_hat).pow(2).sum())
        tot += float((xb - mean).pow(2).sum())
        xhat_sq += float(x_hat.pow(2).sum())
        dot += float((xb * x_hat).sum())
        on = f > 0
        active += float(on.sum())
        fired |= on.any(0)
    n = x.shape[0]
    return SAEMetrics(
        explained_variance=1.0 - sse / tot if tot > 0 else float("nan"),
        l0=active / n,
        dead_fraction=1.0 - float(fired.float().mean()),
        shrinkage=xhat_sq / dot if dot != 0 else float("nan"),
        n=n,
        mse=sse / n,
    )


@torch.no_grad()
def dictionary_recovery(learned: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Mean max-cosine between dictionaries given as rows (e.g. ``sae.W_dec`` vs ground truth).

    ``true_to_learned``: for each true direction, its best learned match (how much of the truth was
    recovered; the usual MMCS). ``learned_to_true``: the reverse, over learned rows with nonzero norm.
    """
    lrn = learned[learned.norm(dim=1) > 0].double()
    lrn = lrn / lrn.norm(dim=1, keepdim=True)
    tru = true.double() / true.double().norm(dim=1, keepdim=True)
    cos = tru @ lrn.T
    return {
        "true_to_learned": float(cos.max(1).values.mean()),
        "learned_to_true": float(cos.max(0).values.mean()),
    }
