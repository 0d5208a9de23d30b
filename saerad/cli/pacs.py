"""``saerad pacs report``: report a study straight from a PACS over DICOMweb, and store the SR back."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from saerad.cli.app import DeviceOption, LocalizeChoice, app

pacs_app = typer.Typer(name="pacs", help="Work with a PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS).",
                       no_args_is_help=True)
app.add_typer(pacs_app)


class StudyFormat(str, Enum):
    text = "text"
    json = "json"
    fhir_bundle = "fhir-bundle"


@pacs_app.command("report")
def pacs_report(
    study: str = typer.Option(..., "--study", help="Study Instance UID of the study to report."),
    url: str | None = typer.Option(None, "--url", help="DICOMweb base URL (default: SAERAD_PACS_URL)."),
    store: bool = typer.Option(False, "--store", help="Store the DICOM SR back into the study (STOW-RS)."),
    instance: str | None = typer.Option(
        None, "--instance", help="Report this SOP Instance UID (skips the frontal-view check)."
    ),
    header: list[str] = typer.Option(
        [], "--header", "-H", help="Extra request header 'Name: value' (repeatable); prefer SAERAD_PACS_HEADERS for secrets."
    ),
    user: str | None = typer.Option(None, "--user", help="HTTP basic user (password: SAERAD_PACS_PASSWORD)."),
    bundle: Path | None = typer.Option(None, "--bundle", "-b", help="Model bundle directory (default: the embedded one)."),
    fmt: StudyFormat = typer.Option(StudyFormat.text, "--format", "-f", help="What to print: text, json or fhir-bundle."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the DICOM SR to this file."),
    localize: LocalizeChoice | None = typer.Option(None, "--localize", help="Add boxes (SCOORD regions): attribution (the encoder, about a second) or counterfactual (the diffusion model, slow on CPU)."),
    device: DeviceOption = "auto",
) -> None:
    """Pull a study's frontal chest radiograph, report it and (with --store) store the SR in the study.

    Authentication comes from SAERAD_PACS_USERNAME/PASSWORD, SAERAD_PACS_TOKEN or SAERAD_PACS_HEADERS
    (a JSON object); --user and --header override them. Research use only: not a medical device.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from saerad.errors import ConfigError
    from saerad.pacs.client import PacsClient
    from saerad.pacs.settings import PacsSettings
    from saerad.pacs.study import check_uid, report_study
    from saerad.pipeline import Reporter

    overrides: dict = {}
    if url is not None:
        overrides["url"] = url
    if user is not None:
        overrides["username"] = user
    try:
        if header:
            overrides["headers"] = {**PacsSettings().headers, **_parse_headers(header)}
        settings = PacsSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid PACS settings: {exc.errors()[0]['msg']}") from exc
    except SettingsError as exc:  # e.g. SAERAD_PACS_HEADERS is not a JSON object
        raise ConfigError(f"invalid PACS settings in the environment: {exc}") from exc
    client = PacsClient(settings)
    check_uid(study)
    reporter = Reporter.from_bundle(bundle, device=device)
    result = report_study(reporter, client, study, instance=instance, store=store,
                          localize=localize.value if localize is not None else None)
    if out is not None:
        from saerad.cli.report import output_path
        from saerad.fileio import atomic_path
        from saerad.report.dicom_sr import sr_bytes

        with atomic_path(output_path(out)) as tmp:
            tmp.write_bytes(sr_bytes(result.sr))
        typer.echo(f"wrote {out}", err=True)
    if fmt is StudyFormat.json:
        typer.echo(json.dumps({**result.summary(), "report": result.report.model_dump(mode="json")}, indent=2))
    elif fmt is StudyFormat.fhir_bundle:
        from saerad.report.fhir import to_fhir_transaction

        typer.echo(json.dumps(to_fhir_transaction([result.report], [result.xray.dicom]), indent=2))
    else:
        from saerad.cli.report import format_text

        typer.echo(format_text(result.report))
    summary = result.summary()
    where = "stored in the study" if result.stored else "not stored (use --store)"
    typer.echo(f"reported instance {summary['image']['sop_instance_uid']} ({result.image.view}); "
               f"SR {summary['sr']['sop_instance_uid']} {where}", err=True)
    for item in summary["skipped"]:
        typer.echo(f"skipped {item['sop_instance_uid']}: {item['reason']}", err=True)


def _parse_headers(values: list[str]) -> dict[str, str]:
    from saerad.errors import ConfigError

    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header needs 'Name: value', got {value.split(':')[0][:40]!r}...")
        headers[name.strip()] = content.strip()
    return headers
