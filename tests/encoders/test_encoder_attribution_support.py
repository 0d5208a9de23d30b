"""What attribution maps need from an encoder: its input geometry, and gradients through the ViT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_dinov2 import RAD_DINO_LIKE, make_tiny_dinov2

from saerad.encoders import load_encoder
from saerad.encoders.preprocess import HFProcessorFallback, ImagePreprocessor
from saerad.errors import ConfigError

LETTERBOX = dict(RAD_DINO_LIKE, size={"height": 42, "width": 42}, do_center_crop=False, do_normalize=False)
CROP = dict(RAD_DINO_LIKE, do_normalize=False)  # shortest edge 42, centre crop 42 (Rad-DINO's scheme)


def _square_at(shape, top, left, side) -> np.ndarray:
    image = np.zeros(shape, dtype=np.float32)
    image[top : top + side, left : left + side] = 1.0
    return image


@pytest.mark.parametrize(("config", "pad", "shape"), [
    (LETTERBOX, True, (90, 60)), (LETTERBOX, True, (60, 90)), (CROP, False, (90, 60)), (CROP, False, (60, 60)),
])
def test_input_geometry_maps_the_preprocessed_image_back_onto_the_original(tmp_path, config, pad, shape):
    directory = make_tiny_dinov2(tmp_path / "enc", config)
    if pad:
        (directory / "saerad_encoder.json").write_text(json.dumps({"pad_to_square": True}))
    pre = ImagePreprocessor.from_pretrained(directory)
    image = _square_at(shape, top=shape[0] // 2 - 12, left=shape[1] // 2 - 6, side=24)
    geometry = pre.input_geometry(shape)
    assert geometry.input_shape == (42, 42)
    back = geometry.to_original(pre(image)[0].numpy(), shape)  # the model input, as a map over the original
    assert back.shape == shape
    assert np.abs(back - image).mean() < 0.03  # the square comes back where it was (up to resampling)


def test_parts_a_centre_crop_cut_away_map_to_zero(tmp_path):
    pre = ImagePreprocessor.from_pretrained(make_tiny_dinov2(tmp_path / "enc", CROP))
    shape = (120, 60)  # resized to 84 x 42, then rows 21..63 kept: original rows 30..90
    back = pre.input_geometry(shape).to_original(np.ones((42, 42), dtype=np.float32), shape)
    assert back[:28].max() == 0 and back[92:].max() == 0 and back[32:88].min() == 1


def test_an_unreproduced_processor_cannot_map_back(tmp_path):
    directory = make_tiny_dinov2(tmp_path / "odd", dict(RAD_DINO_LIKE, size={"shortest_edge": 42, "longest_edge": 60}))
    pre = ImagePreprocessor.from_pretrained(directory)
    assert isinstance(pre, HFProcessorFallback)
    with pytest.raises(ConfigError, match="counterfactual"):
        pre.input_geometry((50, 50))


def test_differentiable_forward_matches_encode_and_gives_the_plain_models_gradients(tiny_dinov2_dir):
    from saerad.encoders.hf import HFDinov2Encoder

    fast = HFDinov2Encoder(tiny_dinov2_dir)  # CPU fast path on, where oneDNN is available
    plain = HFDinov2Encoder(tiny_dinov2_dir, cpu_fast_path=False)
    batch = torch.randn(2, 3, 42, 42, generator=torch.Generator().manual_seed(0))
    grads = []
    for encoder in (fast, plain):
        x = batch.clone().requires_grad_(True)
        forward = encoder.differentiable_forward(x, hidden_states=True)
        torch.testing.assert_close(forward.class_tokens.detach(), encoder.encode(batch), rtol=1e-4, atol=1e-5)
        assert len(forward.hidden_states) == 3 and forward.hidden_states[-2].shape == (2, 1 + 9, 32)
        assert forward.prefix_tokens == 1
        (grad,) = torch.autograd.grad(forward.class_tokens[:, 0].sum(), x)
        grads.append(grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_masked_patches_change_the_token(tiny_dinov2_dir):
    encoder = load_encoder(f"hf:{tiny_dinov2_dir}")
    batch = torch.randn(1, 3, 42, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = encoder.differentiable_forward(batch).class_tokens
        masked = encoder.differentiable_forward(batch, torch.ones(1, 9, dtype=torch.bool)).class_tokens
        none = encoder.differentiable_forward(batch, torch.zeros(1, 9, dtype=torch.bool)).class_tokens
    torch.testing.assert_close(none, whole)
    assert (masked - whole).abs().max() > 1e-3
