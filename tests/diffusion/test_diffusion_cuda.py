"""The diffusion model's CUDA code paths: bf16-autocast training, inversion/sampling, interventions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusion_builders import TOKEN_DIM, blob_images

from saerad.diffusion.data import PairedImages, to_model
from saerad.diffusion.intervene import Edit, intervene
from saerad.diffusion.invert import ddim_invert, ddim_sample
from saerad.diffusion.model import load_diffusion
from saerad.diffusion.train import preset, train_diffusion

pytestmark = pytest.mark.cuda


def test_bf16_training_on_cuda_trains_resumes_and_exports(tmp_path):
    gen = torch.Generator().manual_seed(0)
    pairs = PairedImages(ids=list("abcd"), images=to_model(blob_images(16, 4)).half(),
                         tokens=torch.randn(4, TOKEN_DIM, generator=gen), patient_ids=list("abcd"), roles=["train"] * 4)
    cfg = dict(resolution=16, batch_size=4, checkpoint_every=5, device="cuda")
    train_diffusion(pairs, tmp_path / "run", preset("tiny", steps=5, **cfg), progress=False)
    meta = train_diffusion(pairs, tmp_path / "run", preset("tiny", steps=10, **cfg), progress=False)
    assert meta["steps"] == 10 and meta["autocast"] == "bf16" and meta["device"].startswith("cuda")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert losses and all(np.isfinite(losses))
    model = load_diffusion(tmp_path / "run" / "diffusion", device="cuda")
    assert next(model.parameters()).is_cuda


def test_bf16_forward_on_cuda_matches_fp32_on_the_cpu(tiny_unet):
    x = to_model(blob_images(16, 2))
    t = torch.tensor([50, 700])
    tokens = torch.randn(2, TOKEN_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tiny_unet(x, t, tokens)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = tiny_unet.cuda()(x.cuda(), t.cuda(), tokens.cuda()).float().cpu()
    assert float((got - expected).norm() / expected.norm()) < 5e-2  # ~2e-2 measured with CPU bf16


def test_inversion_and_sampling_run_on_cuda(tiny_unet):
    x0 = to_model(blob_images(16, 2)).cuda()
    tokens = torch.randn(2, TOKEN_DIM, generator=torch.Generator().manual_seed(1)).cuda()
    model = tiny_unet.cuda()
    x_T = ddim_invert(model, x0, tokens, steps=10)
    sample = ddim_sample(model, x_T, tokens, steps=10)
    for out in (x_T, sample):
        assert out.is_cuda and out.shape == x0.shape and torch.isfinite(out).all()
    assert float((x_T - x0).abs().mean()) > 0.1  # inversion moved towards noise


def test_intervention_on_cuda(tiny_unet, tiny_sae, pixel_encoder):
    image = blob_images(16, 1)[0]
    model, sae = tiny_unet.cuda(), tiny_sae.cuda()
    codes = sae.encode(pixel_encoder.encode_images([image]).cuda())[0]
    active = [int(i) for i in torch.nonzero(codes > 0).flatten()[:2]]
    assert active, "the stand-in SAE should have active features"
    result = intervene(model, sae, pixel_encoder, image, [Edit((i,), "remove") for i in active], steps=8)
    assert len(result.counterfactuals) == len(active) == len(result.heatmaps)
    assert result.reconstruction.shape == (16, 16) and np.isfinite(result.reconstruction).all()
    assert len(result.metrics["edits"]) == len(active)
