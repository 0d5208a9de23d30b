"""``saerad report``: grounded findings for one or more X-rays."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from saerad.cli.app import DeviceOption, app


class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    fhir = "fhir"


class ComposerChoice(str, Enum):
    deterministic = "deterministic"
    llm = "llm"


@app.command("report")
def report_command(
    images: list[Path] = typer.Argument(..., help="X-ray files (PNG, JPEG or DICOM).", exists=True, dir_okay=False),
    bundle: Path | None = typer.Option(None, "--bundle", "-b", help="Model bundle directory (default: the embedded one)."),
    fmt: ReportFormat = typer.Option(ReportFormat.text, "--format", "-f", help="text, json (grounded schema) or fhir (R4 DiagnosticReport)."),
    top_k: int | None = typer.Option(None, "--top-k", min=0, help="Write findings from at most N features."),
    threshold: float | None = typer.Option(None, "--threshold", help="Activation above which a feature is active."),
    localize: bool = typer.Option(False, "--localize", help="Fill boxes/heatmaps with the diffusion model (slow on CPU)."),
    composer: ComposerChoice = typer.Option(ComposerChoice.deterministic, "--composer", help="deterministic, or llm (SAERAD_LLM_* settings) to rephrase."),
    device: DeviceOption = "auto",
) -> None:
    """Print a grounded report per image. Research use only: not a medical device.

    With several images, json and fhir print one JSON array (fhir: a FHIR Bundle of type collection).
    """
    from saerad.pipeline import Reporter
    from saerad.report.fhir import to_fhir, to_fhir_bundle

    reporter = Reporter.from_bundle(bundle, device=device, composer=composer.value)
    reports = [
        reporter.report(path, top_k=top_k, threshold=threshold, localize=localize) for path in images
    ]
    if fmt is ReportFormat.json:
        payload = [r.model_dump(mode="json") for r in reports]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    elif fmt is ReportFormat.fhir:
        ids = [f"saerad-{i + 1}" for i in range(len(reports))]
        payload = to_fhir(reports[0], report_id=ids[0]) if len(reports) == 1 else to_fhir_bundle(reports, ids)
        typer.echo(json.dumps(payload, indent=2))
    else:
        for path, report in zip(images, reports, strict=True):
            if len(images) > 1:
                typer.echo(f"== {path}")
            typer.echo(format_text(report))


def format_text(report) -> str:
    """Findings, one sentence a line with the features behind it, then the provenance line."""
    lines = ["FINDINGS (research use only; not for clinical use)"]
    if not report.findings:
        lines.append(f"  {report.text()}")
    for sentence in report.findings:
        ids = ", ".join(f"#{f.id}" for f in sentence.features)
        why = f"; rule {sentence.rule.condition}: evidence {sentence.rule.evidence:.2f} >= {sentence.rule.threshold:.2f}" if sentence.rule else ""
        lines.append(f"  {sentence.text}  [{ids}{why}]")
    bundle = report.bundle
    lines.append(
        f"{len(report.features)} active features; bundle {bundle.get('name')} v{bundle.get('version')}; "
        f"composer {report.composer}; {report.timings_ms.get('total', 0.0):.0f} ms"
    )
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
