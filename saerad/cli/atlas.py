"""``saerad atlas``: a static feature atlas of a bundle on a dataset (see :mod:`saerad.atlas`)."""

from __future__ import annotations

from pathlib import Path

import typer

from saerad.cli.app import BundleOption, DatasetOption, DeviceOption, app


@app.command("atlas")
def atlas(
    dataset: DatasetOption,
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help="dataset root folder"),
    out: Path = typer.Option(..., "--out", help="site folder (created; rerun to resume or update)"),
    bundle: BundleOption = None,
    embeddings: Path | None = typer.Option(None, "--embeddings", help="class tokens from `saerad embed` of the same images with the bundle's encoder (skips embedding)"),
    features: str | None = typer.Option(None, "--features", help="feature ids and ranges, e.g. 0-99,120 (default: all)"),
    top_k: int = typer.Option(12, "--top-k", min=1, help="strongest images per feature"),
    sample_k: int = typer.Option(12, "--sample-k", min=0, help="random images per feature, for contrast"),
    counterfactuals: int = typer.Option(0, "--counterfactuals", min=0, help="images per feature with an add/remove strip (needs a diffusion model; seconds per image on CPU)"),
    counterfactual_features: str | None = typer.Option(None, "--counterfactual-features", help="features that get strips (default: the described ones)"),
    steps: int = typer.Option(25, "--steps", min=1, help="DDIM steps of the strips"),
    device: DeviceOption = "auto",
    title: str | None = typer.Option(None, "--title", help="page title"),
    seed: int = typer.Option(0, "--seed", help="seed of the random samples"),
) -> None:
    """Write a static site (opens from disk) to browse and search the bundle's features on your images."""
    from saerad.atlas import AtlasOptions, build_atlas, parse_feature_spec
    from saerad.bundle import Bundle
    from saerad.datasets import load_dataset
    from saerad.devices import resolve_device

    device = str(resolve_device(device))
    loaded = Bundle.load(bundle, device=device)
    tokens = None
    if embeddings is not None:
        from saerad.encoders.store import EmbeddingSet

        tokens = EmbeddingSet.load(embeddings)
    options = AtlasOptions(
        features=parse_feature_spec(features), top_k=top_k, sample_k=sample_k, counterfactuals=counterfactuals,
        counterfactual_features=parse_feature_spec(counterfactual_features), steps=steps, device=device,
        title=title, seed=seed,
    )
    result = build_atlas(loaded, load_dataset(dataset, root), out, options, dataset=dataset, embeddings=tokens)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    typer.echo(f"{result.features} features on {result.images} images; {result.pages_written} files written, "
               f"{result.pages_unchanged} unchanged ({stages})", err=True)
    typer.echo(str((result.out / "index.html").resolve()))
