"""GatedSAE by hand: 2x2 weights whose encode/decode/loss values are worked out on paper."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saerad.errors import BundleError
from saerad.sae.model import GatedSAE, GatedSAEConfig


def hand_sae() -> GatedSAE:
    sae = GatedSAE(GatedSAEConfig(d_in=2, d_sae=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))  # row norms 2 and 1
        sae.b_dec.copy_(torch.tensor([0.5, 0.0]))
        sae.b_gate.copy_(torch.tensor([0.0, -1.0]))
        sae.b_mag.copy_(torch.tensor([0.1, 0.0]))
        sae.r_mag.copy_(torch.tensor([0.0, math.log(2.0)]))
    return sae


X = torch.tensor([[1.5, 1.5], [0.7, 0.5]])
# row 1: z = [1, 1.5], pi_gate = [1, 0.5] -> both open; f = [1*1 + 0.1, 2*1.5] = [1.1, 3.0]
# row 2: z = [0.2, 0.5], pi_gate = [0.2, -0.5] -> only latent 0; f = [0.2 + 0.1, 0] = [0.3, 0]
F_EXPECTED = torch.tensor([[1.1, 3.0], [0.3, 0.0]])
XHAT_EXPECTED = torch.tensor([[2.7, 3.0], [1.1, 0.0]])


def test_encode_decode_by_hand():
    sae = hand_sae()
    f = sae.encode(X)
    torch.testing.assert_close(f, F_EXPECTED)
    torch.testing.assert_close(sae.decode(f), XHAT_EXPECTED)
    torch.testing.assert_close(sae(X), XHAT_EXPECTED)


def test_gate_closed_means_zero_even_with_positive_magnitude():
    sae = hand_sae()
    with torch.no_grad():
        sae.b_mag.fill_(5.0)  # magnitude path positive everywhere
    f = sae.encode(torch.tensor([[0.7, 0.5]]))
    assert f[0, 1] == 0.0 and f[0, 0] > 0


def test_loss_terms_by_hand():
    losses = hand_sae().losses(X, 0.5)
    # recon: row 1 (1.5-2.7)^2 + (1.5-3)^2 = 3.69; row 2 (0.7-1.1)^2 + 0.5^2 = 0.41 -> mean 2.05
    # sparsity: ReLU(pi) = [1, .5], [.2, 0] weighted by norms [2, 1] -> 2.5, 0.4 -> mean 1.45
    # aux: ReLU(pi) W_dec + b_dec = [2.5, .5], [.9, 0] -> errors 2.0, 0.29 -> mean 1.145
    expected = {"recon": 2.05, "sparsity": 1.45, "aux": 1.145, "total": 2.05 + 0.5 * 1.45 + 1.145}
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert float(losses[name].detach()) == pytest.approx(value, abs=1e-5), name


def test_aux_and_sparsity_do_not_train_the_decoder():
    """The documented choice: decoder values are detached in the aux and sparsity terms."""
    sae = hand_sae()
    losses = sae.losses(X, 0.5)
    (losses["aux"] + losses["sparsity"]).backward()
    assert sae.W_dec.grad is None or torch.count_nonzero(sae.W_dec.grad) == 0
    assert sae.b_gate.grad is not None and torch.count_nonzero(sae.b_gate.grad) > 0


def test_fold_input_scale_keeps_features_and_rescales_reconstruction():
    torch.manual_seed(0)
    sae = GatedSAE(GatedSAEConfig(d_in=6, d_sae=20)).init_weights(b_dec=torch.randn(6), dec_norm=0.5)
    with torch.no_grad():
        sae.b_gate.normal_(0, 0.1)
        sae.b_mag.normal_(0, 0.1)
        sae.r_mag.normal_(0, 0.1)
    x_raw = torch.randn(32, 6) * 40 + 3
    scale = 0.025
    f_train = sae.encode(scale * x_raw)
    recon_train = sae(scale * x_raw)
    sae.fold_input_scale(scale)
    torch.testing.assert_close(sae.encode(x_raw), f_train)
    torch.testing.assert_close(sae(x_raw), recon_train / scale)
    assert sae.cfg.meta["input_scale_folded"] == pytest.approx(scale)


def test_save_load_roundtrip(tmp_path):
    sae = hand_sae()
    sae.cfg.meta["encoder"] = "test"
    sae.save(tmp_path)
    loaded = GatedSAE.load(tmp_path)
    assert loaded.cfg.d_in == 2 and loaded.cfg.d_sae == 2 and loaded.cfg.meta["encoder"] == "test"
    torch.testing.assert_close(loaded.encode(X), F_EXPECTED)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_broken_bundles(tmp_path):
    with pytest.raises(BundleError):
        GatedSAE.load(tmp_path)
    hand_sae().save(tmp_path)
    cfg = json.loads((tmp_path / "sae_config.json").read_text())
    cfg["d_sae"] = 3
    (tmp_path / "sae_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="shape"):
        GatedSAE.load(tmp_path)
    (tmp_path / "sae.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BundleError):
        GatedSAE.load(tmp_path)
