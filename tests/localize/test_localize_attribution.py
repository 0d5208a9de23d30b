"""Attribution maps: a hand-made linear "ViT" gives an oracle; a tiny random Dinov2 checks the plumbing."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from saerad.encoders.base import ClassTokenEncoder, ViTForward
from saerad.encoders.preprocess import ImagePreprocessor
from saerad.errors import ConfigError
from saerad.localize.attribution import (
    ATTRIBUTION_METHODS,
    MAP_SIDE,
    OCCLUSION_WINDOW,
    attribution_map,
    feature_readout,
)
from saerad.sae.model import GatedSAE, GatedSAEConfig

SIDE, PATCH, GRID = 112, 14, 8  # an 8 x 8 patch grid


class LinearPatchEncoder(ClassTokenEncoder):
    """Patch token j = sum of its pixels times V (per dimension); class token = sum of patch tokens.

    Dimension 0 sees only the top-left patch and dimension 1 only the bottom-right one, so a feature
    reading dimension 0 lives exactly in the top-left 1/64 of the (square) image.
    """

    spec, dim, device, image_size, patch_size = "linear-test", 2, torch.device("cpu"), SIDE, PATCH

    def __init__(self) -> None:
        self._pre = ImagePreprocessor(size={"height": SIDE, "width": SIDE}, resample=2, crop=None,
                                      rescale_factor=1 / 255, mean=None, std=None)

    @property
    def preprocessor(self):
        return self._pre

    def encode(self, pixel_values):
        with torch.no_grad():
            return self.differentiable_forward(pixel_values).class_tokens

    def differentiable_forward(self, pixel_values, masked_patches=None, *, hidden_states=False):
        b = pixel_values.shape[0]
        n = GRID * GRID
        patches = pixel_values.sum(1).reshape(b, GRID, PATCH, GRID, PATCH).sum((2, 4)).reshape(b, n)
        tokens = torch.stack([patches * (torch.arange(n) == 0), patches * (torch.arange(n) == n - 1)], -1)
        if masked_patches is not None:
            tokens = tokens * (~masked_patches)[..., None]
        sequence = torch.cat([torch.zeros(b, 1, 2), tokens], 1)
        cls = sequence[:, 1:].sum(1)
        return ViTForward(class_tokens=cls, hidden_states=(sequence, sequence) if hidden_states else ())

    def describe(self):
        return {"spec": self.spec}


def _reader_sae(dim_weights) -> GatedSAE:
    sae = GatedSAE(GatedSAEConfig(d_in=2, d_sae=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor(dim_weights, dtype=torch.float32))
        sae.b_gate.fill_(10.0)
    return sae


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_the_map_lives_where_the_feature_reads_the_image(method):
    encoder, sae = LinearPatchEncoder(), _reader_sae([[1.0, 0.0], [0.0, 1.0]])  # feature 0 <- dim 0 (top left)
    image = np.full((SIDE * 2, SIDE * 2), 0.5, dtype=np.float32)
    found = attribution_map(encoder, sae, image, [0], method=method)
    assert found.heat.shape == (MAP_SIDE, MAP_SIDE) and found.heat.min() >= 0
    patch = MAP_SIDE // GRID
    near = patch * (OCCLUSION_WINDOW + 1 if method == "occlusion" else 2)  # occlusion blurs by its window
    assert found.heat[:near, :near].sum() > 0.7 * found.heat.sum()  # around the top-left patch
    y, x = np.unravel_index(np.argmax(found.heat), found.heat.shape)
    exact = patch * (OCCLUSION_WINDOW if method == "occlusion" else 1)  # occlusion resolves windows, not patches
    assert y < exact and x < exact
    assert found.drive == pytest.approx(np.rint(0.5 * 255) / 255 * 3 * PATCH * PATCH, rel=1e-4)  # 8-bit input
    other = attribution_map(encoder, sae, image, [1], method=method)
    y, x = np.unravel_index(np.argmax(other.heat), other.heat.shape)
    assert y >= MAP_SIDE - exact and x >= MAP_SIDE - exact


def test_readout_is_the_summed_activation_of_active_features():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
    from report_builders import make_tiny_sae

    sae = make_tiny_sae()
    token = torch.randn(1, sae.cfg.d_in, generator=torch.Generator().manual_seed(0))
    f = sae.encode(token).detach()[0]
    ids = [int(i) for i in torch.nonzero(f > 0).flatten()[:3]]
    assert len(ids) == 3
    w, b = feature_readout(sae, ids)
    expected = f[ids].sum() - sae.b_mag.detach()[ids].sum()
    torch.testing.assert_close((token @ w + b)[0], expected, rtol=1e-4, atol=1e-4)


def test_bad_requests_are_config_errors():
    encoder, sae = LinearPatchEncoder(), _reader_sae([[1.0, 0.0], [0.0, 1.0]])
    image = np.zeros((20, 20), dtype=np.float32)
    with pytest.raises(ConfigError, match="out of range"):
        attribution_map(encoder, sae, image, [2])
    with pytest.raises(ConfigError, match="at least one feature"):
        attribution_map(encoder, sae, image, [])
    with pytest.raises(ConfigError, match="unknown attribution method"):
        attribution_map(encoder, sae, image, [0], method="saliency")


def test_real_vit_maps_cover_the_original_aspect():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
    from report_builders import make_tiny_encoder_dir, make_tiny_sae

    from saerad.encoders import load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(f"hf:{make_tiny_encoder_dir(Path(tmp) / 'enc')}")
        sae = make_tiny_sae()
        image = np.random.default_rng(0).random((90, 60)).astype(np.float32)
        token = encoder.encode_images([image])[0]
        w, b = feature_readout(sae, [0, 3])
        for method in ATTRIBUTION_METHODS:
            found = attribution_map(encoder, sae, image, [0, 3], method=method)
            assert found.heat.shape == (MAP_SIDE, round(MAP_SIDE * 60 / 90))
            assert np.isfinite(found.heat).all() and found.heat.min() >= 0
            assert found.drive == pytest.approx(float(token @ w + b), rel=1e-3, abs=1e-4)


def test_patches_outside_the_body_neither_win_nor_bleed():
    encoder, sae = LinearPatchEncoder(), _reader_sae([[1.0, 0.0], [0.0, 1.0]])
    image = np.full((SIDE * 2, SIDE * 2), 0.5, dtype=np.float32)
    body = np.ones(image.shape, dtype=bool)
    body[: SIDE // 4, : SIDE // 4] = False  # the top-left patch (where feature 0 reads) is "text"
    found = attribution_map(encoder, sae, image, [0], method="gradient_x_input", body=body)
    assert found.heat.max() == 0  # its only evidence was outside the body
    inside = attribution_map(encoder, sae, image, [1], method="gradient_x_input", body=body)
    assert inside.heat.max() > 0  # the bottom-right patch is untouched
