"""Model config round trip, fp16 shipping, training resume, data pairing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saerad.diffusion.data import PairedImages, resize_image, to_model
from saerad.diffusion.model import load_diffusion, save_diffusion
from saerad.errors import BundleError


def test_config_rebuilds_the_model_and_fp16_weights_load(tmp_path, tiny_unet):
    x = torch.randn(2, 1, 16, 16)
    tokens = torch.randn(2, 8)
    save_diffusion(tiny_unet, tmp_path / "m", fp16=True, metadata={"steps": 3})
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["_class_name"] == "TokenConditionedUNet" and config["resolution"] == 16
    loaded = load_diffusion(tmp_path / "m")
    with torch.no_grad():
        a, b = tiny_unet(x, 10, tokens), loaded(x, 10, tokens)
    assert torch.allclose(a, b, atol=5e-3)  # fp16 rounding of the weights only
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta == {"steps": 3, "weights_dtype": "float16"}


def test_condition_dropout_uses_the_null_embedding(tiny_unet):
    tokens = torch.randn(3, 8)
    emb = tiny_unet.condition(tokens, torch.tensor([False, True, False]))
    assert torch.equal(emb[1], tiny_unet.null_embedding)
    assert not torch.equal(emb[0], tiny_unet.null_embedding)


def test_broken_model_directories_are_refused(tmp_path, tiny_unet):
    with pytest.raises(BundleError):
        load_diffusion(tmp_path)
    save_diffusion(tiny_unet, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BundleError):
        load_diffusion(tmp_path / "m")


def test_resume_is_exact(tmp_path):
    from safetensors.torch import load_file

    from saerad.diffusion.train import preset, train_diffusion

    gen = torch.Generator().manual_seed(0)
    pairs = PairedImages(ids=list("abc"), images=to_model(torch.rand(3, 16, 16, generator=gen)).half(),
                         tokens=torch.randn(3, 8, generator=gen), patient_ids=list("abc"), roles=["train"] * 3)
    cfg = dict(resolution=16, batch_size=2, checkpoint_every=3)
    train_diffusion(pairs, tmp_path / "straight", preset("tiny", steps=6, **cfg), progress=False)
    train_diffusion(pairs, tmp_path / "resumed", preset("tiny", steps=3, **cfg), progress=False)
    meta = train_diffusion(pairs, tmp_path / "resumed", preset("tiny", steps=6, **cfg), progress=False)
    a = load_file(str(tmp_path / "straight" / "checkpoint-0000006" / "ema.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-0000006" / "ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta["steps"] == 6 and np.isfinite(meta["final_loss"])
    assert (tmp_path / "resumed" / "diffusion" / "config.json").is_file()
    from saerad.errors import ConfigError

    with pytest.raises(ConfigError):  # a resume may not change what the checkpoint was trained as
        train_diffusion(pairs, tmp_path / "resumed", preset("tiny", steps=8, **{**cfg, "batch_size": 3}),
                        progress=False)


def test_resize_keeps_the_whole_film():
    img = np.zeros((60, 30), dtype=np.float32)
    img[:, 15:] = 1.0  # right half bright
    out = resize_image(img, 16)
    assert out.shape == (16, 16)
    assert out[:, :7].max() == 0.0 and out[:, 9:].min() == 1.0


def test_pairs_from_real_images_skip_augmented_views(shared_data):
    from saerad.diffusion.data import image_index, load_pairs
    from saerad.encoders.store import EmbeddingSet

    root = shared_data / "covid-cxr"
    ids = sorted(image_index("covid-cxr", root))[:4]
    tokens = EmbeddingSet(ids=[*ids, f"{ids[0]}#aug1"], tokens=torch.randn(5, 8), encoder="test")
    pairs = load_pairs(tokens, root, resolution=32, progress=False)
    assert pairs.ids == ids and pairs.images.shape == (4, 1, 32, 32)
    assert torch.equal(pairs.tokens, tokens.tokens[:4])
    assert float(pairs.images.min()) >= -1 and float(pairs.images.max()) <= 1


def test_pairs_with_augmented_views_rebuild_the_embedded_view(shared_data):
    """View K is rebuilt from (seed, id, K) exactly as `saerad embed --augment` made it."""
    from saerad.diffusion.data import image_index, load_pairs, resize_image, to_model
    from saerad.encoders.augment import augment_view, view_rng
    from saerad.encoders.store import EmbeddingSet
    from saerad.imaging import load_xray

    root = shared_data / "covid-cxr"
    index = image_index("covid-cxr", root)
    source = sorted(index)[0]
    ids = [source, f"{source}#aug1", f"{source}#aug2"]
    tokens = EmbeddingSet(ids=ids, tokens=torch.randn(3, 8), encoder="test", meta={"seed": 7})
    pairs = load_pairs(tokens, root, resolution=32, augmented_views=True, progress=False)
    assert pairs.ids == ids and torch.equal(pairs.tokens, tokens.tokens)
    assert pairs.patient_ids == [index[source][1]] * 3
    pixels = load_xray(index[source][0]).pixels
    expected = to_model(resize_image(augment_view(pixels, view_rng(7, source, 2)), 32)).half()
    assert torch.equal(pairs.images[2], expected[0])
    assert not torch.equal(pairs.images[1], pairs.images[2])
