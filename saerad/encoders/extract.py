"""The embedding job: images -> class tokens in an :class:`EmbeddingSet`, resumable and multi-GPU.

Work is cut into fixed shards of ``shard_size`` images (in dataset order). Each finished shard is
written atomically to ``<out>.parts/shard-NNNNNN.safetensors``; a rerun skips the shards on disk, so
an interrupted job recomputes at most one shard per process. ``<out>.parts/plan.json`` pins the
image list, shard size, augmentation and encoder: resuming with different settings is refused.

Multi-GPU: ``accelerate launch -m saerad.cli embed ...`` (or ``torchrun``) starts one process per
GPU and sets RANK / WORLD_SIZE / LOCAL_RANK. Process r takes shards r, r + W, r + 2W... on
``cuda:LOCAL_RANK``. No process group is created and nothing waits on a collective: a barrier at the
end would time out when shards are unevenly left over after a resume (NCCL's default timeout is
minutes, a MIMIC-CXR shard set is hours). Instead whichever process finishes last finds every shard
on disk and merges them (under a file lock) into ``<out>``, atomically; the others exit.

Decoding and preprocessing run in DataLoader worker processes (the encoder's picklable
``preprocessor``), so the next batch is decoded while the current one is encoded. An unreadable
image is skipped, counted, and listed with its error in ``<out stem>.failed.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from saerad.datasets.ids import AUG_SEP
from saerad.encoders.augment import augment_view, view_rng
from saerad.encoders.base import ClassTokenEncoder
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError, SaeradError
from saerad.fileio import atomic_write_json, file_lock
from saerad.imaging import DEFAULT_MAX_PIXELS, load_xray

log = logging.getLogger(__name__)

PLAN_VERSION = 1


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a launcher's job (torchrun / accelerate launch environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> DistInfo:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            world=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world=int(env.get("LOCAL_WORLD_SIZE", str(world))),
        )


@dataclass
class EmbedJob:
    """Options of one embedding job (see ``saerad embed --help``)."""

    out: Path
    batch_size: int = 32  # images (views included) per forward pass
    num_workers: int | None = None  # None: one per spare CPU core of this process, at most 12
    shard_size: int = 2048  # images per resumable shard
    augment: int = 0  # extra random views per image, ids "<id>#aug1".."#augK"
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    progress: bool = True
    meta: dict = field(default_factory=dict)  # provenance stored in the output (dataset, root...)

    @property
    def parts_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    @property
    def failures_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".failed.json")


@dataclass
class EmbedResult:
    out: Path
    merged: bool  # this process wrote ``out`` (False: other processes still have shards to do)
    images_done: int  # images this process encoded in this run (failures included)
    failed: int  # failures in this process's shards of this run
    seconds: float
    shards_done_here: int
    shards_skipped: int


def default_num_workers(dist: DistInfo) -> int:
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 2
    return max(1, min(12, cores // max(1, dist.local_world) - 1))


def run_embedding(
    items: Sequence[tuple[str, str | os.PathLike]],
    encoder: ClassTokenEncoder,
    job: EmbedJob,
    *,
    dist: DistInfo | None = None,
) -> EmbedResult:
    """Embed ``items`` (image id, path) with ``encoder`` into ``job.out``; see the module docstring."""
    dist = dist or DistInfo.from_env()
    items = [(str(i), str(p)) for i, p in items]
    _validate(items, job)
    n_shards = (len(items) + job.shard_size - 1) // job.shard_size
    parts = job.parts_dir
    if job.out.exists() and not parts.exists() and not job.overwrite:
        raise ConfigError(f"{job.out} already exists; choose another --out or pass --overwrite")
    parts.mkdir(parents=True, exist_ok=True)
    _check_plan(parts, _plan(items, job, encoder))

    mine = [k for k in range(dist.rank, n_shards, dist.world)]
    pending = [k for k in mine if not _shard_path(parts, k).exists()]
    start = time.perf_counter()
    done_images = failed = 0
    if pending:
        done_images, failed = _encode_shards(items, pending, encoder, job, dist)
    seconds = time.perf_counter() - start
    merged = _try_merge(job, n_shards, encoder)
    return EmbedResult(
        out=job.out, merged=merged, images_done=done_images, failed=failed, seconds=seconds,
        shards_done_here=len(pending), shards_skipped=len(mine) - len(pending),
    )


def items_from_studies(studies) -> list[tuple[str, Path]]:
    """(image id, path) of every image of ``studies``, once each (datasets may list an image twice)."""
    seen: dict[str, Path] = {}
    for study in studies:
        for image_id, path in zip(study.image_ids, study.image_paths):
            if image_id in seen and Path(seen[image_id]) != Path(path):
                raise ConfigError(f"image id {image_id!r} names two files: {seen[image_id]} and {path}")
            seen.setdefault(image_id, Path(path))
    return list(seen.items())


# ------------------------------------------------------------------------------------ planning


def _validate(items: list[tuple[str, str]], job: EmbedJob) -> None:
    if not items:
        raise ConfigError("no images to embed")
    if job.batch_size < 1 or job.shard_size < 1 or job.augment < 0:
        raise ConfigError("batch size and shard size must be >= 1 and augment >= 0")
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ConfigError(f"duplicate image id {dup!r} in the dataset")
    bad = next((i for i in ids if not i or "\n" in i or AUG_SEP in i), None)
    if bad is not None:
        raise ConfigError(f"image id {bad!r} is empty or contains a newline or {AUG_SEP!r}")


def _plan(items: list[tuple[str, str]], job: EmbedJob, encoder: ClassTokenEncoder) -> dict:
    digest = hashlib.sha256()
    for image_id, path in items:
        digest.update(f"{image_id}\t{path}\n".encode())
    return {
        "version": PLAN_VERSION,
        "images": len(items),
        "items_sha256": digest.hexdigest(),
        "shard_size": job.shard_size,
        "augment": job.augment,
        "seed": job.seed,
        "encoder": encoder.spec,
        "dim": encoder.dim,
        "precision": encoder.describe().get("precision"),
    }


def _check_plan(parts: Path, plan: dict) -> None:
    path = parts / "plan.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise ConfigError(
                f"{parts} holds shards of a different job (differs in: {', '.join(diff)}); delete that "
                "folder to start over, or rerun with the original options"
            )
        return
    atomic_write_json(path, plan)


def _shard_path(parts: Path, shard: int) -> Path:
    return parts / f"shard-{shard:06d}.safetensors"


# ------------------------------------------------------------------------------------ encoding


class _ImageViews(Dataset):
    """Item i -> (i, (1+K, ...) views or None, error message or None). Runs in workers.

    Views are (S, S) uint8 when the preprocessor splits into a geometric half and an intensity half
    (12x less data through worker shared memory; normalised on the device), else (3, S, S) float32.
    """

    def __init__(self, items, preprocessor, augment: int, seed: int, max_pixels: int) -> None:
        self.items = items
        self.preprocessor = preprocessor
        self.prepare = getattr(preprocessor, "to_uint8", None) or preprocessor
        self.augment = augment
        self.seed = seed
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image_id, path = self.items[index]
        try:
            pixels = load_xray(path, max_pixels=self.max_pixels).pixels
            views = [self.prepare(pixels)]
            for k in range(1, self.augment + 1):
                views.append(self.prepare(augment_view(pixels, view_rng(self.seed, image_id, k))))
            return index, torch.stack([torch.as_tensor(v) for v in views]), None
        except SaeradError as exc:
            return index, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one odd file must not end a 377k-image job
            return index, None, f"unexpected {type(exc).__name__}: {str(exc)[:200]}"


def _collate(batch):
    indices = [b[0] for b in batch]
    errors = [b[2] for b in batch]
    views = [b[1] for b in batch if b[1] is not None]
    return indices, (torch.cat(views) if views else None), errors


def _batches(items_per_shard: dict[int, list[int]], per_batch: int) -> list[list[int]]:
    batches = []
    for indices in items_per_shard.values():
        batches.extend(indices[i : i + per_batch] for i in range(0, len(indices), per_batch))
    return batches


@dataclass
class _Shard:
    remaining: int
    ids: list[str] = field(default_factory=list)
    rows: list[torch.Tensor] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


def _encode_shards(items, pending: list[int], encoder: ClassTokenEncoder, job: EmbedJob, dist: DistInfo):
    size = job.shard_size
    per_shard = {k: list(range(k * size, min((k + 1) * size, len(items)))) for k in pending}
    shard_of = {i: k for k, indices in per_shard.items() for i in indices}
    views = 1 + job.augment
    per_batch = max(1, job.batch_size // views)
    workers = default_num_workers(dist) if job.num_workers is None else job.num_workers
    loader = DataLoader(
        _ImageViews(items, encoder.preprocessor, job.augment, job.seed, job.max_pixels),
        batch_sampler=_batches(per_shard, per_batch),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    finish = getattr(encoder.preprocessor, "normalize_batch", None)
    state = {k: _Shard(remaining=len(v)) for k, v in per_shard.items()}
    total = sum(len(v) for v in per_shard.values())
    failed = 0
    bar = _progress(total, job, dist)
    with bar:
        for indices, pixel_values, errors in loader:
            tokens = None
            if pixel_values is not None:
                if pixel_values.dtype == torch.uint8:
                    pixel_values = finish(pixel_values.to(encoder.device, non_blocking=True))
                tokens = encoder.encode(pixel_values)
            row = 0
            for index, error in zip(indices, errors):
                shard = state[shard_of[index]]
                image_id, path = items[index]
                if error is None:
                    shard.ids.extend([image_id] + [f"{image_id}{AUG_SEP}{k}" for k in range(1, views)])
                    shard.rows.append(tokens[row : row + views])
                    row += views
                else:
                    failed += 1
                    shard.failures.append({"id": image_id, "path": path, "error": error})
                    log.warning("skipped %s: %s", image_id, error)
                shard.remaining -= 1
                if shard.remaining == 0:
                    _write_shard(job.parts_dir, shard_of[index], shard, encoder)
                    del state[shard_of[index]]
            bar.update(len(indices))
            if failed:
                bar.set_postfix(failed=failed, refresh=False)
    return total, failed


def _progress(total: int, job: EmbedJob, dist: DistInfo):
    from tqdm.auto import tqdm

    desc = "embedding" if dist.world == 1 else f"embedding [rank {dist.rank}]"
    return tqdm(total=total, unit="img", desc=desc, disable=not job.progress, position=dist.rank if dist.world > 1 else None,
                dynamic_ncols=True, smoothing=0.05)


def _write_shard(parts: Path, shard: int, data: _Shard, encoder: ClassTokenEncoder) -> None:
    tokens = torch.cat(data.rows) if data.rows else torch.empty(0, encoder.dim)
    EmbeddingSet(ids=data.ids, tokens=tokens, encoder=encoder.spec,
                 meta={"shard": shard, "failures": data.failures}).save(_shard_path(parts, shard))


# ------------------------------------------------------------------------------------- merging


def _try_merge(job: EmbedJob, n_shards: int, encoder: ClassTokenEncoder) -> bool:
    """Merge when every shard is on disk; the last process to finish does it, under a file lock."""
    parts = job.parts_dir
    lock_path = job.out.with_name(f".{job.out.name}.merge.lock")
    with file_lock(lock_path):
        if not parts.exists():
            return job.out.exists()  # another process merged already
        paths = [_shard_path(parts, k) for k in range(n_shards)]
        if not all(p.exists() for p in paths):
            missing = sum(not p.exists() for p in paths)
            log.info("%d shard(s) still running in other processes; the last one writes %s", missing, job.out)
            return False
        shards = [EmbeddingSet.load(p) for p in paths]
        failures = [f for s in shards for f in s.meta.get("failures", [])]
        meta = dict(job.meta)
        meta.update({
            "encoder_info": encoder.describe(),
            "augment": job.augment,
            "seed": job.seed,
            "images_failed": len(failures),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        merged = EmbeddingSet.concat(shards, meta=meta)
        merged.meta["images_embedded"] = sum(1 for i in merged.ids if AUG_SEP not in i)
        merged.save(job.out)
        atomic_write_json(job.failures_path, {"count": len(failures), "failures": failures})
        shutil.rmtree(parts)
    with contextlib.suppress(OSError):
        lock_path.unlink()
    return True
