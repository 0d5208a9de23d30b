"""Metrics against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from saerad.sae.metrics import dictionary_recovery, evaluate_sae
from saerad.sae.model import GatedSAE, GatedSAEConfig


def identity_like_sae(shrink: float) -> GatedSAE:
    """Latent i copies coordinate i when positive, decoded with a factor ``shrink``."""
    sae = GatedSAE(GatedSAEConfig(d_in=2, d_sae=3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        sae.W_dec.copy_(torch.tensor([[shrink, 0.0], [0.0, shrink], [1.0, 1.0]]))
        sae.b_gate.copy_(torch.tensor([0.0, 0.0, -10.0]))  # latent 2 never fires
    return sae


def test_evaluate_sae_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    m = evaluate_sae(identity_like_sae(1.0), x, batch_size=2)
    assert m.explained_variance == pytest.approx(1.0) and m.shrinkage == pytest.approx(1.0)
    assert m.l0 == pytest.approx(4 / 3) and m.dead_fraction == pytest.approx(1 / 3) and m.n == 3
    half = evaluate_sae(identity_like_sae(0.5), x)
    # x_hat = x / 2: gamma = E||x/2||^2 / E<x, x/2> = 0.5; residual = sum||x/2||^2 = 30 / 4
    total = float((x - x.mean(0)).pow(2).sum())
    assert half.shrinkage == pytest.approx(0.5)
    assert half.explained_variance == pytest.approx(1 - 7.5 / total)
    assert half.mse == pytest.approx(2.5)


def test_dictionary_recovery():
    true = torch.eye(3)
    learned = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    rec = dictionary_recovery(learned, true)
    c = 2 ** -0.5
    assert rec["true_to_learned"] == pytest.approx((1 + c + c) / 3)
    assert rec["learned_to_true"] == pytest.approx((1 + c) / 2)
