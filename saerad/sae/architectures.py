"""The SAE architectures saerad knows, and what every consumer needs from each.

Why a registry: the throughput benchmark (``bench/bench_sae_throughput.py``, also run by the GPU
script ``bench/gpu/run.py``) and the architecture tests loop over :data:`ARCHITECTURES`, so a new
architecture (BatchTopK, JumpReLU, Matryoshka...) joins all of them by registering itself here.

What an entry promises:

- ``build(d_in, d_sae)`` gives an untrained model whose ``losses(x, coef)`` returns named loss
  terms with a scalar ``"total"``: the readable autograd loss that the fast step is checked against;
- ``train_step(sae, x, coef, *, compute_dtype=None, sparse_max_l0=None, compile=False)`` fills every
  parameter's ``.grad`` with the gradient of ``losses(x, coef)["total"]`` and returns a
  :class:`~saerad.sae.steps.StepResult` (an architecture without a sparse or compiled path accepts
  those arguments and says in ``StepResult.sparse`` which path ran);
- ``step_flops(d_in, d_sae)`` is the FLOP per sample of one dense training step (its cost model),
  which turns a measured GEMM rate into the roofline a benchmark reports against;
- ``benchmark_state(sae, l0, generator)`` puts a model into a trained-like state in which about
  ``l0`` latents fire on standard normal inputs (sparse paths only apply to sparse batches, so
  timing a freshly initialised, dense model would measure the wrong step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from saerad.errors import ConfigError
from saerad.sae.model import GatedSAE, GatedSAEConfig
from saerad.sae.steps import StepResult, lean_step


@dataclass(frozen=True)
class SAEArchitecture:
    """One architecture's constructor, fast training step, cost model and benchmark state."""

    name: str
    build: Callable[[int, int], nn.Module]
    train_step: Callable[..., StepResult]
    step_flops: Callable[[int, int], float]
    benchmark_state: Callable[[nn.Module, float, torch.Generator], nn.Module]
    summary: str = ""


ARCHITECTURES: dict[str, SAEArchitecture] = {}


def register(arch: SAEArchitecture) -> SAEArchitecture:
    if arch.name in ARCHITECTURES:
        raise ValueError(f"SAE architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch
    return arch


def get_architecture(name: str) -> SAEArchitecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown SAE architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def normal_quantile(p: float) -> float:
    """The standard normal quantile: the threshold that ``p`` of N(0, 1) draws stay below."""
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)).item()


@torch.no_grad()
def _gated_benchmark_state(sae: GatedSAE, l0: float, generator: torch.Generator) -> GatedSAE:
    """Unit-norm random decoder, ``W_enc = W_dec^T`` (so each pre-activation is N(0, 1) on N(0, I)
    inputs) and gate thresholds at the ``1 - l0/m`` normal quantile."""
    sae.init_weights(dec_norm=1.0, generator=generator)
    q = normal_quantile(1.0 - l0 / sae.cfg.d_sae)
    sae.b_gate.copy_(-q * sae.W_enc.norm(dim=0))
    sae.b_mag.fill_(0.05)
    return sae


GATED = register(SAEArchitecture(
    name="gated",
    build=lambda d_in, d_sae: GatedSAE(GatedSAEConfig(d_in, d_sae)),
    train_step=lean_step,
    step_flops=lambda d_in, d_sae: 14.0 * d_in * d_sae,  # five GEMMs: see saerad.sae.steps
    benchmark_state=_gated_benchmark_state,
    summary="gated SAE (Rajamanoharan et al. 2024), one shared encoder matmul; dense and CSR-sparse steps",
))
