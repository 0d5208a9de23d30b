"""Every registered SAE architecture keeps the registry's promises (a new one is tested by joining)."""

from __future__ import annotations

import json

import pytest
import torch

from saerad.errors import BundleError, ConfigError
from saerad.sae.architectures import ARCHITECTURES, get_architecture, load_sae, normal_quantile, register
from saerad.sae.model import GatedSAE

NAMES = sorted(ARCHITECTURES)


def test_the_four_architectures_are_registered_and_the_cli_offers_them():
    from saerad.cli.app import ArchChoice

    assert NAMES == ["batchtopk", "gated", "jumprelu", "matryoshka"]
    assert sorted(c.value for c in ArchChoice) == NAMES
    assert all(get_architecture(n).name == n and get_architecture(n).model.config_class.architecture == n for n in NAMES)


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


def trained_like(name: str, d: int = 6, m: int = 32) -> torch.nn.Module:
    arch = ARCHITECTURES[name]
    return arch.benchmark_state(arch.build(d, m), 4.0, torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_any_architecture(tmp_path, name):
    sae = trained_like(name)
    sae.cfg.meta["encoder"] = "test"
    sae.save(tmp_path)
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.architecture == name and loaded.cfg == sae.cfg
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        f = sae.encode(x)
        assert f.gt(0).any() and f.ge(0).all()
        torch.testing.assert_close(loaded.encode(x), f)
    assert json.loads((tmp_path / "sae_config.json").read_text())["architecture"] == name


@pytest.mark.parametrize("name", NAMES)
def test_fold_input_scale_keeps_features_and_rescales_reconstruction(name):
    sae = trained_like(name)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(5))
        x_raw = torch.randn(32, 6, generator=torch.Generator().manual_seed(6)) * 40 + 3
        scale = 0.025
        f_train, recon_train = sae.encode(scale * x_raw), sae(scale * x_raw)
        sae.fold_input_scale(scale)
        torch.testing.assert_close(sae.encode(x_raw), f_train)
        torch.testing.assert_close(sae(x_raw), recon_train / scale)


@pytest.mark.parametrize("name", NAMES)
def test_feature_gains_are_the_slope_of_active_features(name):
    """Attribution maps explain sum_i g_i z_i: an active feature moves by g_i per unit of z_i."""
    sae = trained_like(name)
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        f = sae.encode(x)[0]
        i = int(f.argmax())
        step = 1e-3 * sae.W_enc[:, i] / sae.W_enc[:, i].pow(2).sum()  # moves z_i by 1e-3
        moved = sae.encode(x + step)[0, i]
        assert float((moved - f[i]) / 1e-3) == pytest.approx(float(sae.feature_gains()[i]), rel=1e-2)


def test_old_configs_load_as_gated_and_unknown_ones_are_refused(tmp_path):
    trained_like("gated").save(tmp_path)
    cfg = json.loads((tmp_path / "sae_config.json").read_text())
    del cfg["architecture"]  # written before there was more than one architecture
    (tmp_path / "sae_config.json").write_text(json.dumps(cfg))
    assert load_sae(tmp_path).architecture == "gated"
    cfg["architecture"] = "sparsemax"
    (tmp_path / "sae_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="'sparsemax' is not supported"):
        load_sae(tmp_path)
    trained_like("batchtopk").save(tmp_path)
    with pytest.raises(BundleError, match="architecture 'batchtopk', not 'gated'"):
        GatedSAE.load(tmp_path)


def test_build_refuses_bad_settings():
    with pytest.raises(ConfigError, match="invalid batchtopk SAE settings"):
        get_architecture("batchtopk").build(4, 8, k=9)
    with pytest.raises(ConfigError, match="invalid jumprelu SAE settings"):
        get_architecture("jumprelu").build(4, 8, bandwidth=0)
