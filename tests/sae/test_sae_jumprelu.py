"""JumpReLU SAE by hand: encode, loss and the straight-through threshold gradients on 2x2 weights."""

from __future__ import annotations

import pytest
import torch

from saerad.sae.jumprelu import JumpReLUConfig, JumpReLUSAE


def hand_sae(bandwidth: float = 0.5) -> JumpReLUSAE:
    sae = JumpReLUSAE(JumpReLUConfig(d_in=2, d_sae=2, bandwidth=bandwidth))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
        sae.b_enc.copy_(torch.tensor([0.0, -0.5]))
        sae.log_threshold.copy_(torch.tensor([1.0, 0.5]).log())
    return sae


X = torch.tensor([[2.0, 1.2], [0.5, 0.9]])
# pre = x + b_enc: [2, 0.7] and [0.5, 0.4]; thresholds [1, 0.5] -> f = [2, 0.7] and [0, 0]
F_EXPECTED = torch.tensor([[2.0, 0.7], [0.0, 0.0]])


def test_encode_is_a_jump_relu():
    sae = hand_sae()
    torch.testing.assert_close(sae.encode(X), F_EXPECTED)
    torch.testing.assert_close(sae(X), F_EXPECTED)  # W_dec = I, b_dec = 0
    # an activation below its threshold is cut to 0, not shrunk: the jump
    with torch.no_grad():
        assert float(sae.encode(torch.tensor([[0.99, 0.0]]))[0, 0]) == 0.0
        assert float(sae.encode(torch.tensor([[1.01, 0.0]]))[0, 0]) == pytest.approx(1.01)


def test_loss_by_hand():
    losses, codes = hand_sae().training_forward(X, 0.5)
    torch.testing.assert_close(codes.detach(), F_EXPECTED)
    # recon: row 1 (1.2 - 0.7)^2 = 0.25, row 2 0.25 + 0.81 = 1.06 -> 0.655; l0: 2 and 0 -> 1
    assert float(losses["recon"].detach()) == pytest.approx(0.655)
    assert float(losses["l0"].detach()) == pytest.approx(1.0)
    assert float(losses["total"].detach()) == pytest.approx(0.655 + 0.5 * 1.0)


def test_straight_through_gradients_by_hand():
    """Bandwidth 0.5: only latent 1 has pre-activations within 0.25 of its threshold (0.7 and 0.4 vs 0.5).

    d recon / d f_1 (batch mean): row 1 2 (0.7 - 1.2) / 2 = -0.5, row 2 2 (0 - 0.9) / 2 = -0.9;
    d f / d theta = -(theta / eps) = -1 in the window -> +1.4; d l0 / d theta = -(1 / eps) per row,
    batch mean -2, times the coefficient 0.5 -> -1. d theta_1 = 0.4; d log theta_1 = 0.5 * 0.4.
    """
    sae = hand_sae()
    sae.losses(X, 0.5)["total"].backward()
    torch.testing.assert_close(sae.log_threshold.grad, torch.tensor([0.0, 0.2]))
    # pre-activations get the ordinary gradient where the latent is on (row 1 of latent 1), none from l0
    torch.testing.assert_close(sae.b_enc.grad, torch.tensor([0.0, -0.5]))


def test_calibration_starts_at_the_target_l0():
    gen = torch.Generator().manual_seed(0)
    sae = JumpReLUSAE(JumpReLUConfig(d_in=8, d_sae=64)).init_weights(generator=gen)
    x = torch.randn(4000, 8, generator=gen)
    sae.calibrate(x, 6.0)
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum(1).float().mean())
    assert l0 == pytest.approx(6.0, abs=0.1)
    assert float(sae.log_threshold.detach().exp().min()) >= 0.01
    untouched = JumpReLUSAE(JumpReLUConfig(d_in=8, d_sae=64)).init_weights(generator=gen)
    untouched.calibrate(x, None)  # no target: the configured initial threshold stays
    torch.testing.assert_close(untouched.log_threshold.detach().exp(), torch.full((64,), 0.01))
