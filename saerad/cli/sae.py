"""``saerad train-sae``: train the gated SAE on class tokens written by ``saerad embed``."""

from __future__ import annotations

from pathlib import Path

import typer

from saerad.cli import app


@app.command("train-sae")
def train_sae_command(
    embeddings: list[Path] = typer.Option(
        ..., "--embeddings", "-e", exists=True, dir_okay=False,
        help="Embedding file(s) from `saerad embed` (repeat to combine; augmented views '<id>#augK' only ever train).",
    ),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Output folder (SAE, metrics.json, checkpoints)."),
    expansion: float = typer.Option(64, "--expansion", min=0.01, help="Latents per input dimension (d_sae = expansion * d)."),
    lam: float = typer.Option(None, "--lambda", min=0.0, help="Sparsity coefficient [default: 2.0]; raise it for fewer active latents (check L0 in metrics.json)."),
    target_l0: float = typer.Option(None, "--target-l0", min=0.01, help="Adapt lambda during training so the batch L0 tracks this (--lambda is then the starting value)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimizer steps [default: 5000]."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Vectors per step [default: 4096]."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Adam learning rate [default: 1e-3]."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.95, help="Held-out share of source images (or patients)."),
    split_file: Path | None = typer.Option(
        None, "--split-file", exists=True, dir_okay=False,
        help="CSV with 'id' and 'group'/'patient_id' (group-disjoint split) and/or 'split' (train|val).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the init and the batch order."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints."),
    compile_kernels: bool = typer.Option(False, "--compile", help="torch.compile the elementwise kernels (GPU)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard checkpoints of a different earlier run in --out."),
) -> None:
    """Train a gated SAE; re-running the same command resumes from the last checkpoint.

    x64 is the MIMIC-CXR scale of the paper. For a few hundred images (covid-cxr) train on
    `saerad embed --augment 16` output with --expansion 0.5 --target-l0 13.5 --steps 6000
    --batch-size 512 (held-out EV 0.904 at L0 15.4, bench/bench_sae_quality.py).
    """
    import json

    from saerad.sae.run import train_sae_run
    from saerad.sae.trainer import TrainConfig

    overrides = {
        "lam": lam, "target_l0": target_l0, "steps": steps, "batch_size": batch_size, "lr": lr, "checkpoint_every": checkpoint_every,
    }
    cfg = TrainConfig(seed=seed, compile=compile_kernels, **{k: v for k, v in overrides.items() if v is not None})
    result = train_sae_run(
        embeddings, out, expansion=expansion, train_cfg=cfg, val_fraction=val_fraction, split_file=split_file,
        device=device, overwrite=overwrite,
    )
    typer.echo(json.dumps({"out": str(out), "held_out": result["held_out"], **result["split"]}, indent=2))
