"""BatchTopK and Matryoshka SAEs by hand: 2-d inputs, 3 latents, values worked out on paper."""

from __future__ import annotations

import pytest
import torch

from saerad.sae.architectures import get_architecture
from saerad.sae.topk import BatchTopKConfig, BatchTopKSAE, MatryoshkaConfig, MatryoshkaSAE, matryoshka_prefixes


def hand_weights(sae: BatchTopKSAE) -> BatchTopKSAE:
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.2]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))  # unit rows
    return sae


def hand_sae(k: float = 1.5) -> BatchTopKSAE:
    return hand_weights(BatchTopKSAE(BatchTopKConfig(d_in=2, d_sae=3, k=k)))


X = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
# a = ReLU(x W_enc + b_enc): row 1 [2, 1, 1.8], row 2 [0.5, 3, 2.3]
# batch top-k with k = 1.5 keeps round(1.5 * 2) = 3 of the 6: 3, 2.3 and 2
CODES = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 2.3]])
# x_hat = codes W_dec: [2, 0] and [1.38, 4.84]; squared errors 1 and 0.7744 + 3.3856 = 4.16
RECON = (1.0 + 4.16) / 2


def test_batch_top_k_keeps_the_largest_of_the_whole_batch():
    sae = hand_sae()
    torch.testing.assert_close(sae.batch_top_k(sae.activations(X)), CODES)
    # row 2 keeps two latents and row 1 one: the budget is per batch, not per row
    losses, codes = sae.training_forward(X)
    torch.testing.assert_close(codes, CODES)
    assert float(losses["recon"].detach()) == pytest.approx(RECON)
    assert float(losses["auxk"].detach()) == 0.0 and float(losses["total"].detach()) == pytest.approx(RECON)


def test_auxk_by_hand():
    """Latent 1 dead: its activations [1, 3] (aux_k = d_in // 2 = 1) reconstruct the residual."""
    sae = hand_sae()
    losses, _ = sae.training_forward(X, dead=torch.tensor([False, True, False]))
    # residual e = [0, 1], [-0.88, -1.84]; x_aux = [0, 1], [0, 3]: errors 0 and 0.7744 + 23.4256
    # spread: e - mean(e) = +-[0.44, 1.42] -> 2.21 per row
    auxk = (0.0 + 24.2) / 2 / 2.21
    assert float(losses["auxk"].detach()) == pytest.approx(auxk)
    assert float(losses["total"].detach()) == pytest.approx(RECON + auxk / 32)
    losses["total"].backward()
    # the AuxK gradient reaches the dead latent's encoder and decoder
    assert torch.count_nonzero(sae.W_dec.grad[1]) > 0 and sae.b_enc.grad[1] != 0


def test_inference_threshold_is_estimated_from_kept_activations():
    sae = hand_sae()
    assert torch.equal(sae.encode(X), sae.activations(X))  # not estimated yet: plain ReLU
    sae.observe(CODES)
    assert float(sae.threshold) == pytest.approx(2.0)  # the smallest kept activation
    sae.observe(torch.tensor([[1.0, 0.0, 0.0]]))
    assert float(sae.threshold) == pytest.approx(0.99 * 2.0 + 0.01 * 1.0)  # moving average
    with torch.no_grad():
        sae.threshold.fill_(1.9)
    torch.testing.assert_close(sae.encode(X), CODES)  # a JumpReLU at one global threshold
    torch.testing.assert_close(sae(X), torch.tensor([[2.0, 0.0], [1.38, 4.84]]))


def test_fractional_k_and_limits():
    sae = hand_sae(k=0.5)
    assert int((sae.batch_top_k(sae.activations(X)) > 0).sum()) == 1
    with pytest.raises(ValueError, match="k must be"):
        BatchTopKConfig(d_in=2, d_sae=3, k=4)


def test_matryoshka_averages_nested_prefixes_by_hand():
    sae = hand_weights(MatryoshkaSAE(MatryoshkaConfig(d_in=2, d_sae=3, k=1.5, prefixes=[1, 3])))
    losses, codes = sae.training_forward(X)
    torch.testing.assert_close(codes, CODES)
    # prefix [0]: x_hat [2, 0] and [0, 0] -> errors 1 and 0.25 + 9; the whole dictionary: RECON
    prefix = (1.0 + 9.25) / 2
    assert float(losses["recon"].detach()) == pytest.approx(RECON)
    assert float(losses["prefix_recon"].detach()) == pytest.approx((prefix + RECON) / 2)
    assert float(losses["total"].detach()) == pytest.approx((prefix + RECON) / 2)


def test_matryoshka_prefixes():
    assert matryoshka_prefixes(192) == [12, 24, 48, 96, 192]
    assert matryoshka_prefixes(3) == [1, 2, 3]
    assert MatryoshkaConfig(d_in=4, d_sae=64, k=2).prefixes == [4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="prefixes"):
        MatryoshkaConfig(d_in=4, d_sae=64, k=2, prefixes=[8, 4, 64])
    with pytest.raises(ValueError, match="prefixes"):
        MatryoshkaConfig(d_in=4, d_sae=64, k=2, prefixes=[8, 32])


def test_unit_norm_decoder_constraint():
    sae = get_architecture("batchtopk").build(4, 6, k=2).init_weights(generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(6))
    sae.W_dec.grad = torch.randn(6, 4)
    sae.constrain_gradients()
    assert float((sae.W_dec.grad * sae.W_dec.detach()).sum(1).abs().max()) < 1e-6  # nothing along the rows
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.constrain_weights()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(6))
