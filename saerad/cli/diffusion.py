"""``saerad train-diffusion``, ``saerad intervene``, ``saerad figure`` (thin wrappers)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from saerad.cli.app import FEATURE_IDS_HELP, BundleOption, DatasetOption, DeviceOption, app


class Mode(str, Enum):
    add = "add"
    remove = "remove"


@app.command("train-diffusion")
def train_diffusion_cmd(
    embeddings: Annotated[Path, typer.Option(help="class tokens (EmbeddingSet file) of the training images")],
    root: Annotated[Path, typer.Option(help="dataset root folder")],
    out: Annotated[Path, typer.Option(help="output directory (checkpoints, samples, diffusion/)")],
    dataset: DatasetOption = "nih-cxr14",
    resolution: Annotated[int, typer.Option(help="128 (default) or 256")] = 128,
    steps: Annotated[int | None, typer.Option(help="total training steps (default: preset)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per step (default: preset)")] = None,
    device: DeviceOption = "auto",
    preset: Annotated[str | None, typer.Option(help="tiny | cpu | gpu (default: by device)")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop after this many minutes (resumable)")] = None,
    init_from: Annotated[Path | None, typer.Option(
        help="start from this saved diffusion model (a diffusion/ folder, e.g. a bundle's) instead of random "
             "weights: fine-tuning on a new dataset", exists=True, file_okay=False)] = None,
    augmented_views: Annotated[bool, typer.Option(
        help="also train on the file's '<id>#augK' views (from `saerad embed --augment K`), rebuilt exactly")] = False,
) -> None:
    """Train the class-token-conditioned diffusion model; rerun the same command to resume.

    It learns from the patients `saerad build` may learn from; the dataset's test patients
    (saerad.datasets.split) stay out, so the benchmarks measure it on images it never saw.
    """
    from saerad.devices import resolve_device
    from saerad.diffusion.data import load_pairs
    from saerad.fileio import check_output_dir

    check_output_dir(out)
    from saerad.diffusion.train import preset as make_preset
    from saerad.diffusion.train import train_diffusion

    on = resolve_device(device)
    name = preset or ("gpu" if on.type == "cuda" else "cpu")
    cfg = make_preset(name, resolution=resolution, steps=steps, batch_size=batch_size, device=str(on),
                      threads=threads, max_minutes=max_minutes,
                      init_from=str(init_from.resolve()) if init_from is not None else None)
    from saerad.datasets.ids import is_augmented
    from saerad.encoders.store import EmbeddingSet

    tokens = EmbeddingSet.load(embeddings)
    pairs = load_pairs(tokens, root, dataset=dataset, resolution=resolution, augmented_views=augmented_views)
    train, held = pairs.split()
    cfg.meta.update(
        dataset=dataset,
        embeddings=Path(embeddings).name,
        encoder=str(getattr(tokens, "encoder", "unknown")),
        split="saerad.datasets.split: test patients left out",
        augmented_views=augmented_views,
        n_test_images_left_out=sum(not is_augmented(i) for i in held.ids),
        preset=name,
        note=("trained on CPU: the smallest useful model, not a converged one" if on.type == "cpu"
              else "trained on GPU"),
    )
    meta = train_diffusion(train, out, cfg)
    typer.echo(json.dumps(meta, indent=2))


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


@app.command("intervene")
def intervene_cmd(
    image: Annotated[Path, typer.Argument(help="X-ray file (PNG, JPEG, DICOM)")],
    feature: Annotated[list[int], typer.Option("--feature", help=FEATURE_IDS_HELP)],
    mode: Annotated[Mode, typer.Option(help="add or remove the features")],
    out: Annotated[Path, typer.Option(help="output folder (created; its parent must exist)")],
    strength: Annotated[float, typer.Option(help="add: multiple of the feature's 0.99 quantile")] = 1.0,
    bundle: BundleOption = None,
    steps: Annotated[int, typer.Option(help="DDIM steps for inversion and sampling (1..1000)")] = 50,
    diffusion: Annotated[Path | None, typer.Option(help="diffusion model directory overriding the bundle's")] = None,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the cores not busy)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace files already in the output folder")] = False,
) -> None:
    """Counterfactuals of one X-ray: each feature removed (or added), maps, boxes and metrics."""
    from PIL import Image

    from saerad.bundle import Bundle
    from saerad.cli.threads import use_threads
    from saerad.devices import resolve_device
    from saerad.diffusion.intervene import check_request, run_intervention
    from saerad.diffusion.maps import display_scale
    from saerad.fileio import atomic_path, atomic_write_json, check_output_dir
    from saerad.heatmaps.pictures import overlay, to_uint8
    from saerad.imaging import load_xray

    names = ["original.png", "reconstruction.png", "boxes.json", "metrics.json"]
    names += [f"{kind}_{mode.value}_{i}.png" for i in feature for kind in ("counterfactual", "heatmap")]
    check_output_dir(out, names, overwrite=overwrite)
    xray = load_xray(image)
    device = resolve_device(device)
    loaded = Bundle.load(bundle, device=device)
    check_request(loaded, feature, steps, strength)
    use_threads(threads)
    encoder = loaded.load_encoder(device)
    with _progress(2 * steps, "intervene") as bar:
        result = run_intervention(xray, feature, mode.value, strength, loaded, encoder, steps, device=device,
                                  diffusion_dir=diffusion, progress=bar.update)
    out.mkdir(exist_ok=True)

    def save(img, name: str) -> None:
        with atomic_path(out / name) as tmp:
            img.save(tmp, format="PNG")

    save(Image.fromarray(to_uint8(result.original), mode="L"), "original.png")
    save(Image.fromarray(to_uint8(result.reconstruction), mode="L"), "reconstruction.png")
    boxes = {}
    for edit, cf, heat, bxs in zip(result.edits, result.counterfactuals, result.heatmaps, result.boxes):
        tag = f"{edit.mode}_{edit.features[0]}"
        save(Image.fromarray(to_uint8(cf), mode="L"), f"counterfactual_{tag}.png")
        save(overlay(xray.pixels, heat, bxs, scale=display_scale(heat)), f"heatmap_{tag}.png")
        boxes[str(edit.features[0])] = bxs
    atomic_write_json(out / "boxes.json", {"mode": mode.value, "coordinates": "0..1 of the original image",
                                           "boxes": boxes})
    atomic_write_json(out / "metrics.json", result.metrics)
    typer.echo(json.dumps({"out": str(out), "composition": result.metrics["composition"],
                           "boxes": {k: len(v) for k, v in boxes.items()}}, indent=2))


@app.command("figure")
def figure_cmd(
    image: Annotated[Path, typer.Argument(help="X-ray file (PNG, JPEG, DICOM)")],
    feature: Annotated[list[int], typer.Option("--feature", help=FEATURE_IDS_HELP)],
    out: Annotated[Path, typer.Option(help="output PNG file (its folder must exist)")],
    bundle: BundleOption = None,
    steps: Annotated[int, typer.Option(help="DDIM steps (1..1000)")] = 50,
    strength: Annotated[float, typer.Option(help="add strength (x the 0.99 quantile)")] = 1.0,
    diffusion: Annotated[Path | None, typer.Option(help="diffusion model directory overriding the bundle's")] = None,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the cores not busy)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output file")] = False,
) -> None:
    """Paper-style figure: original | reconstruction | +feature | -feature | map, a row per feature."""
    from saerad.bundle import Bundle
    from saerad.cli.threads import use_threads
    from saerad.devices import resolve_device
    from saerad.diffusion.figure import intervention_figure
    from saerad.diffusion.intervene import check_request, dictionary_quantiles, model_for
    from saerad.fileio import atomic_path, check_output_file
    from saerad.imaging import load_xray

    check_output_file(out, overwrite=overwrite)
    xray = load_xray(image)
    device = resolve_device(device)
    loaded = Bundle.load(bundle, device=device)
    check_request(loaded, feature, steps, strength)
    use_threads(threads)
    encoder = loaded.load_encoder(device)
    model = model_for(loaded, device, directory=diffusion)
    descriptions = {i: loaded.dictionary.get(i).description or "" for i in feature}
    with _progress(2 * steps, "figure") as bar:
        picture = intervention_figure(model, loaded.sae, encoder, xray.pixels, feature, descriptions=descriptions,
                                      add_level=dictionary_quantiles(loaded.dictionary), steps=steps,
                                      strength=strength, progress=bar.update)
    with atomic_path(out) as tmp:
        picture.save(tmp, format="PNG")
    typer.echo(str(out))
