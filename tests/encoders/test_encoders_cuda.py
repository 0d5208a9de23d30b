"""The encoder on CUDA: fp32 and bf16 class tokens against the CPU, and the embedding job's GPU path."""

from __future__ import annotations

import pytest
import torch

from saerad.datasets import load_dataset
from saerad.encoders import load_encoder
from saerad.encoders.extract import EmbedJob, items_from_studies, run_embedding
from saerad.encoders.store import EmbeddingSet
from saerad.imaging import load_xray

pytestmark = pytest.mark.cuda


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def cpu_encoder(tiny_dinov2_dir):
    return load_encoder(f"hf:{tiny_dinov2_dir}", device="cpu")


def test_cuda_tokens_match_the_cpu(tiny_dinov2_dir, cpu_encoder, image_folder):
    images = [load_xray(image_folder / f"img{i}.png").pixels for i in range(4)]
    expected = cpu_encoder.encode_images(images)
    fp32 = load_encoder(f"hf:{tiny_dinov2_dir}", device="cuda", precision="fp32")
    auto = load_encoder(f"hf:{tiny_dinov2_dir}", device="cuda")
    assert next(fp32.model.parameters()).is_cuda and auto.precision == "bf16"
    got_fp32, got_bf16 = fp32.encode_images(images), auto.encode_images(images)
    assert got_fp32.device.type == "cpu" and got_bf16.dtype == torch.float32
    assert relative_error(got_fp32, expected) < 1e-4
    assert relative_error(got_bf16, expected) < 3e-2


def test_embedding_job_on_cuda(tiny_dinov2_dir, cpu_encoder, image_folder, tmp_path):
    """Decoding in a worker process, pinned memory, CUDA forward: the same tokens as on the CPU."""
    encoder = load_encoder(f"hf:{tiny_dinov2_dir}", device="cuda", precision="fp32")
    items = items_from_studies(load_dataset("folder", image_folder))
    job = EmbedJob(out=tmp_path / "emb.safetensors", batch_size=3, num_workers=1, shard_size=4, progress=False)
    result = run_embedding(items, encoder, job)
    assert result.merged and result.failed == 1  # img7 is not an image
    emb = EmbeddingSet.load(job.out)
    expected = cpu_encoder.encode_images([load_xray(p).pixels for i, p in items if i in emb.ids])
    assert relative_error(emb.tokens, expected) < 1e-4
