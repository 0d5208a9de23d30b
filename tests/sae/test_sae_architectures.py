"""Every registered SAE architecture keeps the registry's promises (a new one is tested by joining)."""

from __future__ import annotations

import pytest
import torch

from saerad.errors import ConfigError
from saerad.sae.architectures import ARCHITECTURES, get_architecture, normal_quantile, register

NAMES = sorted(ARCHITECTURES)


def test_gated_is_registered():
    assert "gated" in ARCHITECTURES
    assert get_architecture("gated").name == "gated"


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="unknown SAE architecture 'nope'.*gated"):
        get_architecture("nope")
    with pytest.raises(ValueError, match="already registered"):
        register(ARCHITECTURES["gated"])


def test_normal_quantile():
    assert normal_quantile(0.5) == pytest.approx(0.0, abs=1e-12)
    assert normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sparse", [False, True])
def test_train_step_gives_autograd_gradients(name, sparse):
    arch = ARCHITECTURES[name]
    gen = torch.Generator().manual_seed(0)
    sae = arch.benchmark_state(arch.build(12, 96), 6.0, gen).double()
    x = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    sae.losses(x, 0.7)["total"].backward()
    expected = {n: p.grad.clone() for n, p in sae.named_parameters()}
    out = arch.train_step(sae, x, 0.7, sparse_max_l0=1e9 if sparse else None)
    assert torch.isfinite(out.losses["total"])
    for n, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-8, atol=1e-10, msg=n)


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_state_fires_about_l0_latents(name):
    arch = ARCHITECTURES[name]
    sae = arch.benchmark_state(arch.build(64, 4096), 15.0, torch.Generator().manual_seed(1))
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum()) / len(x)
    assert 10.0 < l0 < 22.0
    assert arch.step_flops(768, 49_152) > 0
