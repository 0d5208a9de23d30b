"""``saerad report``: grounded findings for one or more X-rays."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from saerad.cli.app import DeviceOption, LocalizeChoice, app
from saerad.errors import ConfigError


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
    images: list[Path] = typer.Argument(..., help="X-ray files (PNG, JPEG or DICOM).", exists=True, dir_okay=False),
    bundle: Path | None = typer.Option(None, "--bundle", "-b", help="Model bundle directory (default: the embedded one)."),
    fmt: ReportFormat = typer.Option(
        ReportFormat.text, "--format", "-f",
        help="text, json (grounded schema), fhir (R4 DiagnosticReport), fhir-bundle (FHIR transaction Bundle) "
        "or dicom-sr (Comprehensive 3D SR; needs --out).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", dir_okay=True,
        help="Write to this file instead of stdout; with dicom-sr and several images, a folder of IMAGE.sr.dcm files.",
    ),
    top_k: int | None = typer.Option(None, "--top-k", min=0, help="Write findings from at most N features."),
    threshold: float | None = typer.Option(None, "--threshold", help="Activation above which a feature is active."),
    localize: LocalizeChoice | None = typer.Option(None, "--localize", help="Boxes and a heatmap per sentence: attribution (the encoder's own sensitivity, about a second) or counterfactual (the bundle's diffusion model, slow on CPU)."),
    localize_steps: int = typer.Option(50, "--localize-steps", min=1, max=1000, help="DDIM steps of counterfactual localisation."),
    overlays: Path | None = typer.Option(None, "--overlays", file_okay=False, help="With --localize: also write each sentence's heatmap over the X-ray as PNGs into this folder (its parent must exist)."),
    composer: ComposerChoice = typer.Option(ComposerChoice.deterministic, "--composer", help="deterministic, or llm (SAERAD_LLM_* settings) to rephrase."),
    device: DeviceOption = "auto",
) -> None:
    """Print a grounded report per image. Research use only: not a medical device.

    With several images, json prints one JSON array, fhir a FHIR Bundle of type collection and
    fhir-bundle one transaction Bundle. dicom-sr joins a DICOM input's study; for PNG/JPEG input it
    starts a new study without patient identity (docs/deployment.md).
    """
    from saerad.imaging import load_xray
    from saerad.pipeline import Reporter

    if fmt is ReportFormat.dicom_sr and out is None:
        raise ConfigError("--format dicom-sr writes a binary DICOM file: give --out FILE.dcm (or a folder)")
    if overlays is not None:
        from saerad.fileio import check_output_dir

        if localize is None:
            raise ConfigError("--overlays draws the heatmaps of --localize: pass --localize attribution or counterfactual")
        taken = [f.name for path in images for f in overlays.glob(f"{path.stem}-sentence*.png")] if overlays.is_dir() else []
        check_output_dir(overlays, taken)  # a folder (or new, in an existing parent), never overwriting
    method = localize.value if localize is not None else None
    reporter = Reporter.from_bundle(bundle, device=device, composer=composer.value)
    reports, sources = [], []
    for path in images:
        xray = load_xray(path)  # decoded here so the DICOM header is at hand for SR and FHIR references
        reports.append(reporter.report(xray, top_k=top_k, threshold=threshold, localize=method,
                                       localize_steps=localize_steps))
        sources.append(xray.dicom)
        if overlays is not None:
            _write_overlays(overlays, path, xray.pixels, reports[-1])
    if fmt is ReportFormat.dicom_sr:
        _write_dicom_sr(images, reports, sources, out)
        return
    _emit(_render(fmt, images, reports, sources), out)


def _render(fmt: ReportFormat, images: list[Path], reports: list, sources: list) -> str:
    from saerad.report.fhir import to_fhir, to_fhir_bundle, to_fhir_transaction

    if fmt is ReportFormat.json:
        payload = [r.model_dump(mode="json") for r in reports]
        return json.dumps(payload[0] if len(payload) == 1 else payload, indent=2)
    if fmt is ReportFormat.fhir:
        ids = [f"saerad-{i + 1}" for i in range(len(reports))]
        payload = to_fhir(reports[0], report_id=ids[0]) if len(reports) == 1 else to_fhir_bundle(reports, ids)
        return json.dumps(payload, indent=2)
    if fmt is ReportFormat.fhir_bundle:
        return json.dumps(to_fhir_transaction(reports, sources), indent=2)
    blocks = [(f"== {path}\n" if len(images) > 1 else "") + format_text(report) for path, report in zip(images, reports, strict=True)]
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
    """Findings, one sentence a line with the features behind it, then the provenance line."""
    lines = ["FINDINGS (research use only; not for clinical use)"]
    if not report.findings:
        lines.append(f"  {report.text()}")
    for sentence in report.findings:
        ids = ", ".join(f"#{f.id}" for f in sentence.features)
        why = f"; rule {sentence.rule.condition}: evidence {sentence.rule.evidence:.2f} >= {sentence.rule.threshold:.2f}" if sentence.rule else ""
        lines.append(f"  {sentence.text}  [{ids}{why}]")
        if sentence.boxes is not None:
            boxes = "; ".join(f"x {b.x_min:.2f}-{b.x_max:.2f}, y {b.y_min:.2f}-{b.y_max:.2f}" for b in sentence.boxes)
            lines.append(f"    boxes: {boxes or 'none (the map shows nothing)'}")
    bundle = report.bundle
    lines.append(
        f"{len(report.features)} active features; bundle {bundle.get('name')} v{bundle.get('version')}; "
        f"composer {report.composer}; {report.timings_ms.get('total', 0.0):.0f} ms"
    )
    if report.localization is not None:
        lines.append(f"localised by {report.localization.method} ({report.localization.sentences} sentences; "
                     "boxes as fractions of the image)")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
