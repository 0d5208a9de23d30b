"""The SAE architectures saerad knows, and what every consumer needs from each.

Why a registry: the trainer, ``saerad train-sae --arch`` and ``saerad build --arch``, the loader of
saved SAEs (:func:`load_sae`), the throughput benchmark (``bench/bench_sae_throughput.py``, also run
by the GPU script ``bench/gpu/run.py``), the frontier benchmark (``bench/bench_sae_frontier.py``) and
the architecture tests loop over :data:`ARCHITECTURES`, so a new architecture joins all of them by
registering itself here.

What an entry promises:

- ``model`` is a :class:`~saerad.sae.base.SparseAutoencoder` subclass; ``build(d_in, d_sae, **options)``
  gives an untrained one (``options``: fields of its config) whose ``losses(x, coef, dead=None)``
  returns named loss terms with a scalar ``"total"``: the readable autograd loss that the fast step
  is checked against;
- ``train_step(sae, x, coef, *, compute_dtype=None, sparse_max_l0=None, compile=False, dead=None)``
  fills every parameter's ``.grad`` with the gradient of ``losses(x, coef, dead)["total"]`` and
  returns a :class:`~saerad.sae.steps.StepResult` (an architecture without a sparse or compiled path
  accepts those arguments and says in ``StepResult.sparse`` which path ran);
- ``fixed_l0``: the sparsity is the config's ``k`` (the trainer sets it to the target L0) rather than
  a penalty ``coef`` that the trainer warms up and steers; ``default_coef`` is where a penalty starts;
- ``step_flops(d_in, d_sae)`` is the FLOP per sample of one dense training step (its cost model),
  which turns a measured GEMM rate into the roofline a benchmark reports against;
- ``benchmark_state(sae, l0, generator)`` puts a model into a trained-like state in which about
  ``l0`` latents fire on standard normal inputs (sparse paths only apply to sparse batches, so
  timing a freshly initialised, dense model would measure the wrong step).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from saerad.errors import BundleError, ConfigError
from saerad.sae.base import SparseAutoencoder, architecture_of, read_saved
from saerad.sae.jumprelu import JumpReLUSAE
from saerad.sae.model import GatedSAE
from saerad.sae.steps import StepResult, autograd_step, lean_step
from saerad.sae.topk import BatchTopKSAE, MatryoshkaSAE


@dataclass(frozen=True)
class SAEArchitecture:
    """One architecture's model class, training step, cost model and benchmark state."""

    name: str
    model: type[SparseAutoencoder]
    train_step: Callable[..., StepResult]
    step_flops: Callable[[int, int], float]
    benchmark_state: Callable[[SparseAutoencoder, float, torch.Generator], SparseAutoencoder]
    fixed_l0: bool = False
    default_coef: float = 2.0
    summary: str = ""

    def build(self, d_in: int, d_sae: int, **options: Any) -> SparseAutoencoder:
        try:
            cfg = self.model.config_class(d_in=d_in, d_sae=d_sae, **options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid {self.name} SAE settings: {exc}") from exc
        return self.model(cfg)


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


def sae_from_saved(config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    """A model of the architecture ``config`` names (none: gated), with ``tensors`` loaded."""
    name = architecture_of(config)
    if name not in ARCHITECTURES:
        raise BundleError(f"SAE architecture {name!r} is not supported (this saerad knows {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name].model.from_saved(config, tensors)


def load_sae(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a saved SAE of any registered architecture (``sae_config.json`` + ``sae.safetensors``)."""
    return sae_from_saved(*read_saved(directory)).to(device)


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
    model=GatedSAE,
    train_step=lean_step,
    step_flops=lambda d_in, d_sae: 14.0 * d_in * d_sae,  # five GEMMs: see saerad.sae.steps
    benchmark_state=_gated_benchmark_state,
    summary="gated SAE (Rajamanoharan et al. 2024), one shared encoder matmul; dense and CSR-sparse steps",
))


@torch.no_grad()
def _threshold_benchmark_state(sae: BatchTopKSAE, l0: float, generator: torch.Generator) -> BatchTopKSAE:
    """Unit decoder rows, ``W_enc = W_dec^T``, ``k = l0`` and the inference threshold at the
    ``1 - l0/m`` normal quantile (the batch top-k keeps about the same latents)."""
    sae.init_weights(generator=generator)
    sae.cfg.k = float(l0)
    sae.threshold.fill_(normal_quantile(1.0 - l0 / sae.cfg.d_sae))
    return sae


@torch.no_grad()
def _jumprelu_benchmark_state(sae: JumpReLUSAE, l0: float, generator: torch.Generator) -> JumpReLUSAE:
    """Unit decoder rows, ``W_enc = W_dec^T`` and every threshold at the ``1 - l0/m`` normal quantile."""
    sae.init_weights(generator=generator)
    sae.log_threshold.fill_(math.log(normal_quantile(1.0 - l0 / sae.cfg.d_sae)))
    return sae


def _autograd_architecture(name: str, model: type[SparseAutoencoder], benchmark_state, **kwargs) -> SAEArchitecture:
    """An architecture trained by :func:`~saerad.sae.steps.autograd_step`. Its cost model: the
    encoder GEMM, the decode, and in the backward the decoder-input gradient and both weight
    gradients, five d x m GEMMs = 10 d m FLOP per sample (AuxK adds up to 6 d m once latents die;
    the benchmark state has none dead)."""
    return register(SAEArchitecture(name=name, model=model, train_step=autograd_step,
                                    step_flops=lambda d_in, d_sae: 10.0 * d_in * d_sae,
                                    benchmark_state=benchmark_state, **kwargs))


BATCHTOPK = _autograd_architecture(
    "batchtopk", BatchTopKSAE, _threshold_benchmark_state, fixed_l0=True,
    summary="BatchTopK (Bussmann et al. 2024) with AuxK; a learned global threshold at inference; autograd step",
)
JUMPRELU = _autograd_architecture(
    "jumprelu", JumpReLUSAE, _jumprelu_benchmark_state,
    default_coef=0.1,  # on nih-cxr14 tokens 1.0 overshot: L0 fell to 9 of 16 and latents died on the way
    summary="JumpReLU (Rajamanoharan et al. 2024), L0 penalty through straight-through estimators; autograd step",
)
MATRYOSHKA = _autograd_architecture(
    "matryoshka", MatryoshkaSAE, _threshold_benchmark_state, fixed_l0=True,
    summary="Matryoshka BatchTopK (Bussmann et al. 2025): nested prefixes m/16..m share one dictionary; autograd step",
)
