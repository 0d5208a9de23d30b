"""HF Dinov2 backend on a tiny random checkpoint saved to a temporary directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_dinov2 import RAD_DINO_LIKE, make_tiny_dinov2

from saerad.encoders import load_encoder
from saerad.encoders.preprocess import HFProcessorFallback, ImagePreprocessor
from saerad.errors import ConfigError


def _gray(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width), dtype=np.float32)


def test_class_token_is_token_zero_of_last_hidden_state(tiny_dinov2_dir):
    from transformers import Dinov2Model

    encoder = load_encoder(f"hf:{tiny_dinov2_dir}")
    assert encoder.dim == 32 and encoder.image_size == 42 and encoder.device.type == "cpu"
    images = [_gray(50, 70, 1), _gray(90, 45, 2), _gray(42, 42, 3)]
    batch = torch.stack([encoder.preprocess(im) for im in images])
    assert batch.shape == (3, 3, 42, 42) and batch.dtype == torch.float32
    tokens = encoder.encode(batch)
    reference = Dinov2Model.from_pretrained(tiny_dinov2_dir).eval()
    with torch.no_grad():
        expected = reference(pixel_values=batch).last_hidden_state[:, 0]
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encoder.encode_images(images, batch_size=2), tokens, rtol=1e-5, atol=1e-5)
    assert not encoder.model.training


def test_cpu_fast_path_is_exact(tiny_dinov2_dir):
    from saerad.encoders.cpu_speed import onednn_linear_available
    from saerad.encoders.hf import HFDinov2Encoder

    if not onednn_linear_available():
        pytest.skip("oneDNN linear not available in this torch build")
    fast = HFDinov2Encoder(tiny_dinov2_dir)
    plain = HFDinov2Encoder(tiny_dinov2_dir, cpu_fast_path=False)
    assert fast.cpu_fast_path["onednn_linear"] > 0 and fast.cpu_fast_path["folded_layer_scale"] == 4
    assert fast.cpu_fast_path["fused_gelu"] == 2 and not plain.cpu_fast_path
    batch = torch.randn(3, 3, 42, 42)
    torch.testing.assert_close(fast.encode(batch), plain.encode(batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(50, 70), (90, 45), (30, 30)])
def test_preprocessing_equals_the_checkpoints_own_processor(tiny_dinov2_dir, shape):
    from transformers import AutoImageProcessor

    image = _gray(*shape, seed=shape[0])
    ours = ImagePreprocessor.from_pretrained(tiny_dinov2_dir)
    assert isinstance(ours, ImagePreprocessor)
    rgb = np.repeat(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    theirs = AutoImageProcessor.from_pretrained(tiny_dinov2_dir)(images=rgb, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(ours(image), theirs.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(HFProcessorFallback(str(tiny_dinov2_dir))(image), theirs.float(), rtol=0, atol=1e-6)


def test_vit_style_square_resize_equals_processor(tmp_path):
    from transformers import AutoImageProcessor

    config = dict(RAD_DINO_LIKE, size={"height": 42, "width": 42}, do_center_crop=False, resample=4,
                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    directory = make_tiny_dinov2(tmp_path / "vit", config)
    image = _gray(77, 51, 5)
    rgb = np.repeat(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    theirs = AutoImageProcessor.from_pretrained(directory)(images=rgb, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(ImagePreprocessor.from_pretrained(directory)(image), theirs.float(), rtol=0, atol=1e-5)


def test_pad_to_square_letterboxes_with_black(tmp_path):
    config = dict(RAD_DINO_LIKE, size={"height": 42, "width": 42}, do_center_crop=False, do_normalize=False)
    directory = make_tiny_dinov2(tmp_path / "pad", config)
    (directory / "saerad_encoder.json").write_text(json.dumps({"pad_to_square": True}))
    pre = ImagePreprocessor.from_pretrained(directory)
    out = pre(np.ones((42, 21), dtype=np.float32))  # a white portrait strip
    assert out.shape == (3, 42, 42)
    assert float(out[:, :, :8].max()) == 0.0 and float(out[:, :, -8:].max()) == 0.0  # black sides
    assert float(out[:, :, 14:28].min()) == 1.0


def test_unknown_processor_config_falls_back_to_transformers(tmp_path):
    config = dict(RAD_DINO_LIKE, size={"shortest_edge": 42, "longest_edge": 60})
    directory = make_tiny_dinov2(tmp_path / "odd", config)
    pre = ImagePreprocessor.from_pretrained(directory)
    assert isinstance(pre, HFProcessorFallback)
    import pickle

    clone = pickle.loads(pickle.dumps(pre))  # must travel to DataLoader workers
    assert clone(_gray(50, 50)).shape == (3, 42, 42)


def test_describe_is_json_and_names_the_preprocessing(tiny_dinov2_dir):
    info = load_encoder(str(tiny_dinov2_dir)).describe()
    json.dumps(info)
    assert info["dim"] == 32 and info["precision"] == "fp32"
    assert info["preprocessing"]["crop"] == [42, 42]
    assert info["preprocessing"]["mean"] == [0.5307] * 3
    assert info["spec"].startswith("hf:")


def test_bad_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown encoder"):
        load_encoder("rad-dino-from-the-hub")
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "notdino").mkdir()
    (tmp_path / "notdino" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="Dinov2"):
        load_encoder(f"hf:{tmp_path / 'notdino'}")


def test_cuda_request_without_cuda_is_a_config_error(tiny_dinov2_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_encoder(f"hf:{tiny_dinov2_dir}", device="cuda")


def test_missing_processor_config_is_explained(tmp_path):
    directory = make_tiny_dinov2(tmp_path / "noproc")
    (directory / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        load_encoder(f"hf:{directory}")
