"""``saerad report``: grounded findings for one or more X-rays; ``saerad features``: what the ids mean."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from saerad.cli.app import BundleOption, DeviceOption, LocalizeChoice, app
from saerad.errors import ConfigError, SaeradError


class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    fhir = "fhir"
    fhir_bundle = "fhir-bundle"
    dicom_sr = "dicom-sr"


class ComposerChoice(str, Enum):
    deterministic = "deterministic"
    llm = "llm"


@app.command("report")
def report_command(
    images: list[Path] = typer.Argument(..., help="X-ray files (PNG, JPEG or DICOM).", exists=True, dir_okay=False,
                                        metavar="IMAGE..."),
    bundle: BundleOption = None,
    fmt: ReportFormat = typer.Option(
        ReportFormat.text, "--format", "-f",
        help="text, json (grounded schema), fhir (R4 DiagnosticReport), fhir-bundle (FHIR transaction Bundle) "
        "or dicom-sr (Comprehensive 3D SR; needs --out).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", dir_okay=True,
        help="Write to this file instead of stdout; with dicom-sr and several images, a folder of IMAGE.sr.dcm files.",
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Write findings from at most N features (default: the bundle's)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Activation above which a feature is active, >= 0 (default: the bundle's)."),
    localize: LocalizeChoice | None = typer.Option(None, "--localize", help="Boxes and a heatmap per sentence: attribution (the encoder's own sensitivity, about a second) or counterfactual (the bundle's diffusion model, slow on CPU)."),
    localize_steps: int = typer.Option(50, "--localize-steps", min=1, max=1000, help="DDIM steps of counterfactual localisation."),
    overlays: Path | None = typer.Option(None, "--overlays", file_okay=False, help="With --localize: also write each sentence's heatmap over the X-ray as PNGs into this folder (its parent must exist)."),
    composer: ComposerChoice = typer.Option(ComposerChoice.deterministic, "--composer", help="deterministic, or llm (SAERAD_LLM_* settings) to rephrase."),
    device: DeviceOption = "auto",
) -> None:
    """Print a grounded report per image. Research use only: not a medical device.

    With several images, json prints an array of {"file", "report"}, fhir a FHIR Bundle of type
    collection and fhir-bundle one transaction Bundle. An image that cannot be read is named on
    stderr and the others are still reported (exit status 1). dicom-sr joins a DICOM input's study;
    for PNG/JPEG input it starts a new study without patient identity (docs/deployment.md).
    """
    from saerad.imaging import load_xray
    from saerad.pipeline import Reporter
    from saerad.report.select import check_selection_options

    check_selection_options(top_k, threshold)  # before the bundle is loaded
    if fmt is ReportFormat.dicom_sr and out is None:
        raise ConfigError("--format dicom-sr writes a binary DICOM file: give --out FILE.dcm (or a folder)")
    if out is not None:  # before any work: a bad path is one line, not a lost computation
        from saerad.fileio import check_output_dir, check_output_file

        if fmt is ReportFormat.dicom_sr and len(images) > 1:
            check_output_dir(out)
        else:
            check_output_file(out, overwrite=True)
    if overlays is not None:
        from saerad.fileio import check_output_dir

        if localize is None:
            raise ConfigError("--overlays draws the heatmaps of --localize: pass --localize attribution or counterfactual")
        taken = [f.name for path in images for f in overlays.glob(f"{path.stem}-sentence*.png")] if overlays.is_dir() else []
        check_output_dir(overlays, taken)  # a folder (or new, in an existing parent), never overwriting
    method = localize.value if localize is not None else None
    reporter = Reporter.from_bundle(bundle, device=device, composer=composer.value)
    done, reports, sources, failed = [], [], [], []
    for path in images:
        try:
            xray = load_xray(path)  # decoded here so the DICOM header is at hand for SR and FHIR references
            report = reporter.report(xray, top_k=top_k, threshold=threshold, localize=method,
                                     localize_steps=localize_steps)
        except SaeradError as exc:
            if len(images) == 1:
                raise
            failed.append((path, exc))
            continue
        done.append(path)
        reports.append(report)
        sources.append(xray.dicom)
        if overlays is not None:
            _write_overlays(overlays, path, xray.pixels, report)
    if reports and fmt is ReportFormat.dicom_sr:
        _write_dicom_sr(done, reports, sources, out)
    elif reports or fmt is ReportFormat.json:
        _emit(_render(fmt, images, done, reports, sources, failed), out)
    for path, exc in failed:
        typer.echo(f"error: {path}: {exc}", err=True)
    if failed:
        typer.echo(f"{len(failed)} of {len(images)} image(s) could not be reported", err=True)
        raise typer.Exit(1)


def _render(fmt: ReportFormat, images: list[Path], done: list[Path], reports: list, sources: list,
            failed: list) -> str:
    from saerad.report.fhir import to_fhir, to_fhir_bundle, to_fhir_transaction

    if fmt is ReportFormat.json:
        if len(images) == 1:
            return json.dumps(reports[0].model_dump(mode="json"), indent=2)
        by_file = {path: {"file": str(path), "report": r.model_dump(mode="json")} for path, r in zip(done, reports, strict=True)}
        by_file |= {path: {"file": str(path), "error": {"code": exc.code, "message": str(exc)}} for path, exc in failed}
        return json.dumps([by_file[path] for path in images], indent=2)
    if fmt is ReportFormat.fhir:
        ids = [f"saerad-{i}-{path.stem}" for i, path in enumerate(done, start=1)]
        payload = to_fhir(reports[0], report_id=ids[0]) if len(images) == 1 else to_fhir_bundle(reports, ids)
        return json.dumps(payload, indent=2)
    if fmt is ReportFormat.fhir_bundle:
        return json.dumps(to_fhir_transaction(reports, sources), indent=2)
    blocks = [(f"== {path}\n" if len(images) > 1 else "") + format_text(report) for path, report in zip(done, reports, strict=True)]
    return "\n".join(blocks)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text)
        return
    from saerad.fileio import atomic_write_text

    atomic_write_text(output_path(out), text + "\n")
    typer.echo(f"wrote {out}", err=True)


def _write_dicom_sr(images: list[Path], reports: list, sources: list, out: Path) -> None:
    from saerad.fileio import atomic_path
    from saerad.report.dicom_sr import sr_bytes, to_dicom_sr

    if len(images) > 1 and out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; with several images --out must be a folder")
    for path, report, source in zip(images, reports, sources, strict=True):
        target = output_path(out / f"{path.stem}.sr.dcm" if len(images) > 1 else out)
        data = sr_bytes(to_dicom_sr(report, source, source_format=report.image.source_format if report.image else None))
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        typer.echo(f"wrote {target}", err=True)
        if source is None:
            typer.echo(f"note: {path.name} is not DICOM, so its SR starts a new study with no patient identity", err=True)


def output_path(path: Path) -> Path:
    """``path`` if writing there replaces at most a regular file (never a device, a FIFO, a folder)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a regular file; choose another --out")
    return path


def _overlay_name(image: Path, sentence: int) -> str:
    return f"{image.stem}-sentence{sentence}.png"


def _write_overlays(folder: Path, image: Path, pixels, report) -> None:
    """Each localised sentence's heatmap over its X-ray (RGB, boxes in green), one PNG per sentence."""
    import base64

    from saerad.fileio import atomic_path
    from saerad.heatmaps.pictures import overlay, read_heatmap

    folder.mkdir(exist_ok=True)
    for k, sentence in enumerate(report.findings):
        if not sentence.heatmap:
            continue
        heat = read_heatmap(base64.b64decode(sentence.heatmap.partition(",")[2]))
        picture = overlay(pixels, heat, [b.model_dump() for b in sentence.boxes or []], scale=1.0)
        with atomic_path(folder / _overlay_name(image, k)) as tmp:
            picture.save(tmp, format="PNG")


def format_text(report) -> str:
    """Findings (one sentence a line, with the features behind it), then every active feature in
    the order of the JSON ``features`` (strongest first), then provenance."""
    lines = [f"WARNING: {w}" for w in report.warnings]
    lines.append("FINDINGS (research use only; not for clinical use)")
    if not report.findings:
        lines.append(f"  {report.text()}")
    for sentence in report.findings:
        ids = ", ".join(f"#{f.id}" for f in sentence.features)
        why = f"; rule {sentence.rule.condition}: evidence {sentence.rule.evidence:.2f} >= {sentence.rule.threshold:.2f}" if sentence.rule else ""
        lines.append(f"  {sentence.text}  [{ids}{why}]")
        if sentence.boxes is not None:
            boxes = "; ".join(f"x {b.x_min:.2f}-{b.x_max:.2f}, y {b.y_min:.2f}-{b.y_max:.2f}" for b in sentence.boxes)
            lines.append(f"    boxes: {boxes or 'none (the map shows nothing)'}")
    lines.append(f"ACTIVE FEATURES ({len(report.features)}, strongest first)")
    for f in report.features:
        if f.description and f.usable:
            what = f.description + (f" (held-out AUROC {f.score:.2f})" if f.score is not None else "")
        elif f.description:
            what = f"{f.description} (not validated on held-out patients)"
        else:
            what = "(no description)"
        strength = f", strength {f.strength:.2f}" if f.strength is not None else ""
        lines.append(f"  #{f.id:<5} activation {f.activation:.2f}{strength}  {what}")
    bundle = report.bundle
    ood = report.out_of_distribution
    check = ("no out-of-distribution check in this bundle" if ood is None else
             f"out-of-distribution check: distance {ood.distance:.1f} "
             f"{'>' if ood.flagged else '<='} threshold {ood.threshold:.1f}")
    lines.append(
        f"bundle {bundle.get('name')} v{bundle.get('version')}; composer {report.composer}; {check}; "
        f"{report.timings_ms.get('total', 0.0):.0f} ms"
    )
    if report.localization is not None:
        lines.append(f"localised by {report.localization.method} ({report.localization.sentences} sentences; "
                     "boxes as fractions of the image)")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


@app.command("features")
def features_command(
    query: Annotated[str | None, typer.Argument(help="Words to look for in the descriptions (default: list all).")] = None,
    bundle: BundleOption = None,
    usable: Annotated[bool, typer.Option("--usable", help="Only features whose description held up on held-out patients.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 50,
) -> None:
    """List a bundle's SAE features (ids for --feature): frequency, held-out score, description."""
    from saerad.bundle import Bundle

    dictionary = Bundle.load(bundle).dictionary
    feats = dictionary.search(query, limit=len(dictionary.features)) if query else dictionary.features
    if usable:
        feats = [f for f in feats if f.usable]
    typer.echo(f"{'id':>6}  {'active in':>9}  {'AUROC':>5}  description")
    for f in feats[:limit]:
        score = f"{f.description_score:.2f}" if f.description_score is not None else "-"
        text = f.description or "(no description)"
        typer.echo(f"{f.id:>6}  {f.frequency:>8.1%}  {score:>5}  {text}{'' if f.usable else '  [not usable]'}")
    shown = min(limit, len(feats))
    typer.echo(f"{shown} of {len(feats)} feature(s) shown; {len(dictionary.features)} in the bundle", err=True)
