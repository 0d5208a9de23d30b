"""The resumable, shardable embedding job on a tiny encoder and a folder of synthetic images."""

from __future__ import annotations

import json

import pytest
import torch

from saerad.datasets import load_dataset
from saerad.encoders import load_encoder
from saerad.encoders.extract import DistInfo, EmbedJob, items_from_studies, run_embedding
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError
from saerad.imaging import load_xray


@pytest.fixture(scope="module")
def encoder(tiny_dinov2_dir):
    return load_encoder(f"hf:{tiny_dinov2_dir}")


def _items(root):
    return items_from_studies(load_dataset("folder", root))


def _job(tmp_path, **kw) -> EmbedJob:
    return EmbedJob(out=tmp_path / "out" / "emb.safetensors", batch_size=2, num_workers=0, shard_size=3,
                    progress=False, **kw)


def test_embeds_every_readable_image_and_lists_the_rest(encoder, image_folder, tmp_path):
    items = _items(image_folder)
    job = _job(tmp_path)
    result = run_embedding(items, encoder, job)
    assert result.merged and result.images_done == 8 and result.failed == 1
    emb = EmbeddingSet.load(job.out)
    assert emb.ids == [f"img{i}" for i in range(7)] and emb.encoder == encoder.spec
    expected = encoder.encode_images([load_xray(p).pixels for _, p in items[:7]])
    torch.testing.assert_close(emb.tokens, expected, rtol=1e-5, atol=1e-5)
    failed = json.loads(job.failures_path.read_text())
    assert failed["count"] == 1 and failed["failures"][0]["id"] == "img7"
    assert "not a PNG, JPEG or DICOM" in failed["failures"][0]["error"]
    assert emb.meta["images_failed"] == 1 and emb.meta["encoder_info"]["dim"] == 32
    assert not job.parts_dir.exists()
    with pytest.raises(ConfigError, match="already exists"):
        run_embedding(items, encoder, job)


def test_two_processes_split_shards_and_the_last_one_merges(encoder, image_folder, tmp_path):
    items = _items(image_folder)
    job = _job(tmp_path)
    first = run_embedding(items, encoder, job, dist=DistInfo(rank=0, world=2))
    assert not first.merged and first.shards_done_here == 2  # shards 0 and 2 of 0..2
    assert sorted(p.name for p in job.parts_dir.glob("shard-*")) == ["shard-000000.safetensors", "shard-000002.safetensors"]
    again = run_embedding(items, encoder, job, dist=DistInfo(rank=0, world=2))  # resume: nothing to redo
    assert again.shards_skipped == 2 and again.images_done == 0 and not again.merged
    last = run_embedding(items, encoder, job, dist=DistInfo(rank=1, world=2))
    assert last.merged and last.shards_done_here == 1
    single = _job(tmp_path / "single")
    run_embedding(items, encoder, single)
    a, b = EmbeddingSet.load(job.out), EmbeddingSet.load(single.out)
    assert a.ids == b.ids
    torch.testing.assert_close(a.tokens, b.tokens)


def test_resuming_with_other_settings_is_refused(encoder, image_folder, tmp_path):
    items = _items(image_folder)
    run_embedding(items, encoder, _job(tmp_path), dist=DistInfo(rank=0, world=2))
    with pytest.raises(ConfigError, match="different job.*shard_size"):
        run_embedding(items, encoder, EmbedJob(out=_job(tmp_path).out, shard_size=4, num_workers=0, progress=False))


def test_augmented_views_are_extra_rows_and_reproducible(encoder, image_folder, tmp_path):
    items = _items(image_folder)[:3]
    job = _job(tmp_path, augment=2)
    run_embedding(items, encoder, job)
    emb = EmbeddingSet.load(job.out)
    assert emb.ids[:3] == ["img0", "img0#aug1", "img0#aug2"] and len(emb) == 9
    assert not torch.allclose(emb.tokens[0], emb.tokens[1])
    plain = EmbeddingSet.load(run_embedding(items, encoder, _job(tmp_path / "plain")).out)
    torch.testing.assert_close(emb.originals().tokens, plain.tokens, rtol=1e-5, atol=1e-5)
    again = _job(tmp_path / "again", augment=2)
    run_embedding(items, encoder, again)
    torch.testing.assert_close(EmbeddingSet.load(again.out).tokens, emb.tokens)


def test_worker_processes_decode(encoder, image_folder, tmp_path):
    items = _items(image_folder)[:4]
    job = EmbedJob(out=tmp_path / "w.safetensors", batch_size=2, num_workers=1, shard_size=8, progress=False)
    run_embedding(items, encoder, job)
    assert len(EmbeddingSet.load(job.out)) == 4


def test_duplicate_rows_of_one_image_are_embedded_once(image_folder):
    studies = load_dataset("folder", image_folder)
    assert len(items_from_studies(studies + studies[:2])) == len(studies)
