"""``saerad build``: a model bundle from a dataset (embed -> train-sae -> dictionary -> bundle)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from saerad.cli.app import ArchOption, BundleOption, DatasetOption, DeviceOption, app


class DescriberChoice(str, Enum):
    extractive = "extractive"
    llm = "llm"


@app.command("build")
def build_command(
    dataset: DatasetOption,
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help="Dataset folder."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (replaced when it changes)."),
    encoder: str = typer.Option("default", "--encoder", help="Encoder spec: 'default' or 'hf:/path/to/dinov2'."),
    embeddings: Path | None = typer.Option(None, "--embeddings", exists=True, dir_okay=False, help="Reuse class tokens from `saerad embed` (same --encoder) instead of embedding here."),
    augment: int = typer.Option(0, "--augment", min=0, help="Extra augmented views per image for SAE training."),
    expansion: float | None = typer.Option(None, "--expansion", min=0.01, help="SAE width / encoder dim (default: the largest power of two in [1/8, 64] with two training images per feature)."),
    describer: DescriberChoice = typer.Option(DescriberChoice.extractive, "--describer", help="Feature descriptions: extractive (offline) or llm (SAERAD_LLM_*)."),
    describer_opt: list[str] = typer.Option([], "--describer-opt", metavar="KEY=VALUE", help="Describer option, repeatable (e.g. max_pvalue=0.05 for the extractive one)."),
    all_described: bool = typer.Option(False, "--all-described", help="Bundle default: write findings from every described feature, not only those whose held-out score passes."),
    no_report_text: bool = typer.Option(False, "--no-report-text", help="Leave report text of top images out of the bundle (for sharing)."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Stage outputs and stamps (default: OUT.work)."),
    arch: ArchOption = None,
    steps: int | None = typer.Option(None, "--steps", min=1, help="SAE training steps (default scales with the data)."),
    lam: float | None = typer.Option(None, "--lambda", min=0.0, help="SAE sparsity coefficient, fixed (default: found by the controller for --target-l0; not for batchtopk/matryoshka)."),
    target_l0: float | None = typer.Option(None, "--target-l0", min=0.01, help="Active SAE features per training vector to aim at (batchtopk/matryoshka: their k) [default: 13.5 unless --lambda is given]."),
    seed: int = typer.Option(0, "--seed"),
    name: str | None = typer.Option(None, "--name", help="Bundle name (default: OUT's folder name)."),
    version: str = typer.Option("1", "--version", help="Bundle version string."),
    diffusion: Path | None = typer.Option(None, "--diffusion", exists=True, file_okay=False, help="Ship this `saerad train-diffusion` model (its diffusion/ folder) for localisation and interventions."),
    device: DeviceOption = "auto",
    force: bool = typer.Option(False, "--force", help="Re-run every stage even when current."),
) -> None:
    """Build a model bundle; stages whose inputs are unchanged are skipped, interrupted ones resume.

    The split is saerad.datasets.split's: the SAE and feature statistics learn from the training
    patients, descriptions are scored on held-out patients, and test patients (the official test
    split, else a patient hash) are never read, so `saerad evaluate` on the same data is fair.
    """
    from saerad.build import BuildConfig, build, parse_describer_options
    from saerad.fileio import check_output_dir

    check_output_dir(out)
    if work_dir is not None:
        check_output_dir(work_dir)
    cfg = BuildConfig(
        dataset=dataset,
        root=root,
        out=out,
        encoder=encoder,
        embeddings=embeddings,
        augment=augment,
        expansion=expansion,
        describer=describer.value,
        describer_options=parse_describer_options(describer_opt),
        findings_from_all_described=all_described,
        include_report_text=not no_report_text,
        work_dir=work_dir,
        sae_architecture=arch.value if arch else None,
        sae_steps=steps,
        sae_lambda=lam,
        sae_target_l0=target_l0,
        seed=seed,
        name=name,
        version=version,
        diffusion=diffusion,
        device=device,
        force=force,
    )
    result = build(cfg)
    for stage, ran in result.ran.items():
        typer.echo(f"{stage:<11} {'ran' if ran else 'current (skipped)'}")
    typer.echo(f"bundle written to {result.out}")



@app.command("calibrate-ood")
def calibrate_ood_command(
    dataset: DatasetOption,
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help="The bundle's training dataset folder."),
    bundle: BundleOption = None,
    embeddings: Path | None = typer.Option(None, "--embeddings", exists=True, dir_okay=False, help="Class tokens of the dataset from `saerad embed` with the bundle's encoder (e.g. the build's OUT.work/embeddings.safetensors); default: embed the training images here."),
    device: DeviceOption = "auto",
) -> None:
    """Add the out-of-distribution check to an existing bundle (built before `saerad build` made one).

    It is calibrated on the class tokens of the bundle's training patients (saerad.datasets.split on
    --dataset/--root, as `saerad build` split them) and written into the bundle in place, with new
    checksums; everything else in the bundle stays as it is.
    """
    from saerad.build import add_ood_to_bundle
    from saerad.devices import resolve_device

    check = add_ood_to_bundle(bundle, dataset, root, embeddings=embeddings, device=str(resolve_device(device)))
    meta = check.meta
    typer.echo(f"out-of-distribution check added: threshold {check.threshold:.2f} (Mahalanobis distance), "
               f"calibrated on {meta['n_images']} images of {meta['n_patients']} training patients; "
               f"{meta['training_flagged_share']:.1%} of them flagged out of fold")
