"""The SAE's CUDA code paths: bf16 steps, CSR-sparse steps (SpMM/SDDMM on CUDA), fused Adam.

Each architecture in the registry is checked against float64 autograd on the CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from saerad.sae.architectures import ARCHITECTURES
from saerad.sae.trainer import SAETrainer, TrainConfig

pytestmark = pytest.mark.cuda
NAMES = sorted(ARCHITECTURES)
LAM = 0.5


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.double().cpu(), reference.double().cpu()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-30))


def model_and_batch(name: str, d: int = 64, m: int = 2048, batch: int = 512):
    arch = ARCHITECTURES[name]
    gen = torch.Generator().manual_seed(0)
    sae = arch.benchmark_state(arch.build(d, m), 12.0, gen)
    x = torch.randn(batch, d, generator=gen)
    reference = arch.build(d, m).double()
    reference.load_state_dict(sae.state_dict())
    reference.losses(x.double(), LAM)["total"].backward()
    expected = {n: p.grad.detach().clone() for n, p in reference.named_parameters()}
    return arch, sae.cuda(), x.cuda(), expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sparse", [False, True])
def test_bf16_step_on_cuda_tracks_float64_autograd(name, sparse):
    arch, sae, x, expected = model_and_batch(name)
    out = arch.train_step(sae, x, LAM, compute_dtype=torch.bfloat16, sparse_max_l0=1e9 if sparse else None)
    assert torch.isfinite(out.losses["total"]).item()
    for n, p in sae.named_parameters():
        assert p.grad is not None and p.grad.is_cuda and p.grad.dtype == torch.float32, n
        # bf16 pre-activations flip a few gates near their threshold: compare directions (as the CPU test does)
        cos = torch.nn.functional.cosine_similarity(p.grad.double().cpu().flatten(), expected[n].flatten(), dim=0)
        assert cos > 0.98, (n, float(cos))


@pytest.mark.parametrize("name", NAMES)
def test_sparse_csr_step_on_cuda_is_exact_in_float32(name):
    """The CSR kernels (SpMM decodes, SDDMM, transposed SpMM weight gradients) run on CUDA and agree
    with autograd to float32 rounding: the sparse step is exact, not an approximation."""
    arch, sae, x, expected = model_and_batch(name)
    out = arch.train_step(sae, x, LAM, compute_dtype=torch.float32, sparse_max_l0=1e9)
    if not out.sparse:
        pytest.skip(f"{name} has no sparse step")
    for n, p in sae.named_parameters():
        assert relative_error(p.grad, expected[n]) < 1e-4, n


def test_trainer_uses_fused_adam_and_the_sparse_step_on_cuda():
    """Same model and batches on CPU and CUDA (float32 compute): the updates of the fused-Adam CUDA run
    match the CPU run's, and it keeps the sparse path (the trainer falls back to the dense step only
    where CSR kernels are missing)."""
    arch = ARCHITECTURES["gated"]
    gen = torch.Generator().manual_seed(0)
    start = arch.benchmark_state(arch.build(32, 512), 12.0, gen)
    initial = {n: p.detach().clone() for n, p in start.named_parameters()}
    cfg = TrainConfig(steps=30, batch_size=256, lr=1e-3, lam=0.5, compute_dtype="float32", lr_warmup_steps=5,
                      checkpoint_every=1000)
    cpu = SAETrainer(copy.deepcopy(start), cfg, input_scale=1.0, device="cpu")
    gpu = SAETrainer(copy.deepcopy(start), cfg, input_scale=1.0, device="cuda")
    assert gpu.optimizer.defaults["fused"] is True
    sparse_steps = 0
    for step in range(cfg.steps):
        batch = torch.randn(cfg.batch_size, 32, generator=gen)
        cpu.train_step(batch)
        sparse_steps += gpu.train_step(batch).sparse
        assert gpu._sparse_ok, f"the CUDA trainer fell back to the dense step at step {step}"
    assert sparse_steps == cfg.steps
    for (n, a), (_, b) in zip(gpu.sae.named_parameters(), cpu.sae.named_parameters()):
        assert relative_error(a.cpu() - initial[n], b - initial[n]) < 2e-2, n
