"""The hand-written dense and sparse steps give autograd's gradients of GatedSAE.losses."""

from __future__ import annotations

import pytest
import torch

from saerad.sae.model import GatedSAE, GatedSAEConfig
from saerad.sae.steps import autograd_step, lean_step


def random_sae(d: int = 8, m: int = 40, dtype=torch.float64, gate_shift: float = 0.0) -> GatedSAE:
    gen = torch.Generator().manual_seed(3)
    sae = GatedSAE(GatedSAEConfig(d, m)).init_weights(b_dec=torch.randn(d, generator=gen) * 0.1, dec_norm=0.5, generator=gen)
    with torch.no_grad():
        for p in (sae.b_gate, sae.b_mag, sae.r_mag):
            p.copy_(torch.randn(m, generator=gen) * 0.3)
        sae.b_gate.sub_(gate_shift)
    return sae.to(dtype)


def grads(sae: GatedSAE) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("gate_shift", [0.0, 0.6])  # dense-ish and sparse-ish gates
def test_lean_step_matches_autograd(sparse, gate_shift):
    sae = random_sae(gate_shift=gate_shift)
    x = torch.randn(24, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = autograd_step(sae, x, 0.7)
    expected = grads(sae)
    out = lean_step(sae, x, lam=0.7, sparse_max_l0=1e9 if sparse else None)
    assert out.sparse is sparse
    assert out.l0 == pytest.approx(ref.l0)
    assert torch.equal(out.fired, ref.fired)
    for name, value in ref.losses.items():
        assert float(out.losses[name]) == pytest.approx(float(value), rel=1e-10, abs=1e-12), name
    for name, value in grads(sae).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_sparse_switch_follows_l0():
    sae = random_sae(gate_shift=0.6)
    x = torch.randn(16, 8, dtype=torch.float64)
    l0 = lean_step(sae, x, 1.0).l0
    assert lean_step(sae, x, 1.0, sparse_max_l0=l0 + 0.01).sparse
    assert not lean_step(sae, x, 1.0, sparse_max_l0=l0 - 0.01).sparse


def test_bf16_compute_path_approximates_fp32():
    """The GPU configuration (bf16 GEMMs and (B, m) tensors) run on CPU: gradients stay aligned."""
    sae = random_sae(d=32, m=128, dtype=torch.float32)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    lean_step(sae, x, lam=0.5)
    exact = grads(sae)
    for sparse in (None, 1e9):
        out = lean_step(sae, x, lam=0.5, compute_dtype=torch.bfloat16, sparse_max_l0=sparse)
        assert torch.isfinite(out.losses["total"])
        for name, value in grads(sae).items():
            cos = torch.nn.functional.cosine_similarity(value.flatten(), exact[name].flatten(), dim=0)
            assert cos > 0.98, (name, sparse, float(cos))
