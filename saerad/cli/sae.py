"""``saerad train-sae``: train an SAE (gated by default) on class tokens written by ``saerad embed``."""

from __future__ import annotations

from pathlib import Path

import typer

from saerad.cli.app import ArchOption, DeviceOption, app


@app.command("train-sae")
def train_sae_command(
    embeddings: list[Path] = typer.Option(
        ..., "--embeddings", "-e", exists=True, dir_okay=False,
        help="Embedding file(s) from `saerad embed` (repeat to combine; augmented views '<id>#augK' only ever train).",
    ),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Output folder (SAE, metrics.json, checkpoints)."),
    arch: ArchOption = None,
    expansion: float = typer.Option(None, "--expansion", min=0.01, help="Latents per input dimension (d_sae = expansion * d) [default: two training images per latent, at most 64]."),
    lam: float = typer.Option(None, "--lambda", min=0.0, help="Sparsity coefficient; without it the controller aims at --target-l0 instead (not for batchtopk/matryoshka)."),
    target_l0: float = typer.Option(None, "--target-l0", min=0.01, help="Adapt lambda during training so the batch L0 tracks this; batchtopk/matryoshka: their k [default: 13.5 unless --lambda is given]."),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimizer steps [default: 6,000 below 50k vectors, else about 20 epochs]."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Vectors per step [default: 512 below 50k vectors, else 4,096]."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Adam learning rate [default: 1e-3]."),
    device: DeviceOption = "auto",
    held_out_fraction: float = typer.Option(
        0.15, "--held-out-fraction", "--val-fraction", min=0.0, max=0.95,
        help="Share of patients (or source images) held out for the metrics, drawn by a hash of their id.",
    ),
    split_file: Path | None = typer.Option(
        None, "--split-file", exists=True, dir_okay=False,
        help="CSV with 'id' and 'group'/'patient_id' (group-disjoint split) and/or 'split' (train|val).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split hash, the init and the batch order."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints [default: a tenth of the steps]."),
    compile_kernels: bool = typer.Option(False, "--compile", help="torch.compile the elementwise kernels (GPU)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard checkpoints of a different earlier run in --out."),
) -> None:
    """Train an SAE; re-running the same command resumes from the last checkpoint.

    The defaults are those of `saerad build`: its architecture, a width of two training images per
    latent (x64 on MIMIC-CXR, x0.5 on a few hundred images) and 13.5 active latents per vector (a
    lambda controller aims at it; BatchTopK and Matryoshka take it as their k).
    On a few hundred images train on `saerad embed --augment 16` output.
    """
    import json

    from saerad.datasets.ids import base_id
    from saerad.datasets.split import HELD_OUT, TRAIN, embedding_roles, read_split_file, vector_rows
    from saerad.errors import ConfigError
    from saerad.fileio import check_output_dir
    from saerad.sae.run import default_train_config, load_embedding_files, train_sae

    check_output_dir(out)
    emb = load_embedding_files(embeddings)
    groups, assignment = read_split_file(split_file) if split_file else ({}, {})
    roles = embedding_roles(emb.ids, held_out_fraction=held_out_fraction, salt=str(seed) if seed else "",
                            groups=groups, assignment=assignment)
    rows = vector_rows(emb.ids, roles)
    if not rows[HELD_OUT]:
        raise ConfigError("the split leaves no held-out vectors: raise --held-out-fraction or fix the split file")
    if not rows[TRAIN]:
        raise ConfigError("the split leaves no training vectors: lower --held-out-fraction or fix the split file")
    train = emb.tokens[rows[TRAIN]]
    cfg = default_train_config(
        len(train), architecture=arch.value if arch else None, steps=steps, lam=lam, target_l0=target_l0,
        batch_size=batch_size, seed=seed, lr=lr, checkpoint_every=checkpoint_every, compile=compile_kernels or None,
    )
    _, metrics = train_sae(
        train, emb.tokens[rows[HELD_OUT]], out, expansion=expansion,
        n_images=len({base_id(emb.ids[i]) for i in rows[TRAIN]}), cfg=cfg, device=device, overwrite=overwrite,
        meta={"encoder": emb.encoder},
    )
    typer.echo(json.dumps({"out": str(out), "architecture": cfg.architecture, "held_out": metrics["held_out"], "vectors": metrics["vectors"]}, indent=2))
