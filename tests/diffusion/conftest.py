"""Stand-ins for the diffusion tests: blob images, a tiny UNet, a tiny SAE and a pixel encoder.

Everything is 16-32 px and seeded so the mechanics tests run in seconds on a shared 2-core CPU.
"""

from __future__ import annotations

import pytest
import torch
from diffusion_builders import TOKEN_DIM, PixelEncoder, blob_images


@pytest.fixture()
def pixel_encoder() -> PixelEncoder:
    return PixelEncoder()


@pytest.fixture()
def tiny_sae():
    """An 8 -> 16 gated SAE with open gates (most features active on PixelEncoder tokens)."""
    from saerad.sae.model import GatedSAE, GatedSAEConfig

    gen = torch.Generator().manual_seed(0)
    sae = GatedSAE(GatedSAEConfig(d_in=TOKEN_DIM, d_sae=16))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(TOKEN_DIM, 16, generator=gen).abs())
        sae.W_dec.copy_(torch.randn(16, TOKEN_DIM, generator=gen) * 0.2)
        sae.b_gate.fill_(10.0)
        sae.b_mag.fill_(0.01)
    return sae.eval()


@pytest.fixture()
def tiny_unet():
    from saerad.diffusion.model import TokenConditionedUNet

    torch.manual_seed(0)
    return TokenConditionedUNet.from_architecture("tiny", token_dim=TOKEN_DIM, resolution=16).eval()


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A tiny UNet trained 100 steps on two blob images (~3 s): (model, images [0, 1], tokens)."""
    from saerad.diffusion.data import PairedImages, to_model
    from saerad.diffusion.model import load_diffusion
    from saerad.diffusion.train import preset, train_diffusion

    images = blob_images(16, 2)
    tokens = torch.randn(2, TOKEN_DIM, generator=torch.Generator().manual_seed(0))
    pairs = PairedImages(ids=["a", "b"], images=to_model(images).half(), tokens=tokens, patient_ids=["a", "b"],
                         roles=["train", "train"])
    out = tmp_path_factory.mktemp("trained_tiny")
    cfg = preset("tiny", resolution=16, steps=100, batch_size=2, lr=3e-3, cond_dropout=0.0,
                 checkpoint_every=10**6)
    train_diffusion(pairs, out, cfg, progress=False)
    return load_diffusion(out / "diffusion"), images, tokens


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU OpenMP barriers cost seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
