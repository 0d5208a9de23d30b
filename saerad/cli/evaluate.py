"""``saerad label-reports``, ``saerad score`` and ``saerad evaluate`` (thin: see :mod:`saerad.eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from saerad.cli.app import BundleOption, DatasetOption, DeviceOption, app


@app.command("label-reports")
def label_reports_cmd(
    input: Path = typer.Argument(..., help="CSV or JSONL with an id column and a report text column."),
    out: Path = typer.Option(..., "--out", help="Output CSV: the id column, then the 14 conditions."),
    text_field: str = typer.Option(None, "--text-field", help="Text column (default: text/report/findings...)."),
    id_field: str = typer.Option(None, "--id-field", help="Id column (default: id/study_id/uid...)."),
) -> None:
    """Label reports with the CheXpert-style rule labeller: 1 positive, 0 negative, -1 uncertain, blank."""
    import csv
    import io
    import math

    from saerad.eval.io import atomic_write_text, read_reports
    from saerad.fileio import check_output_file
    from saerad.radtext import CONDITIONS, label_reports

    check_output_file(out, overwrite=True)
    reports, id_col = read_reports(input, id_field=id_field, text_field=text_field)
    labels = label_reports(list(reports.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([id_col, *CONDITIONS])
    for key, row in zip(reports, labels, strict=True):
        writer.writerow([key, *("" if math.isnan(v) else int(v) for v in row)])
    atomic_write_text(out, buffer.getvalue())
    typer.echo(f"labelled {len(reports)} reports -> {out}")


def _options(resamples: int, seed: int, meteor: bool, chexbert: bool, progress: bool = True):
    from saerad.eval.scoring import ScoreOptions

    return ScoreOptions(n_resamples=resamples, seed=seed, meteor=meteor, chexbert=None if chexbert else False, progress=progress)


@app.command("score")
def score_cmd(
    predictions: Path = typer.Option(..., "--predictions", help="Generated reports: CSV or JSONL with id + text."),
    references: Path = typer.Option(..., "--references", help="Reference reports: CSV or JSONL with id + text."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, metrics.md, predictions.jsonl)."),
    id_field: str = typer.Option(None, "--id-field", help="Id column in both files."),
    text_field: str = typer.Option(None, "--text-field", help="Text column in both files."),
    resamples: int = typer.Option(500, "--resamples", min=0, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed"),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor", help="METEOR 1.5 (needs Java)."),
    chexbert: bool = typer.Option(True, "--chexbert/--no-chexbert", help="CheXbert F1 when SAERAD_CHEXBERT_* are set."),
) -> None:
    """Score reports made by anything against references; prints the Markdown table."""
    from saerad.eval.io import read_reports
    from saerad.eval.scoring import score_reports
    from saerad.eval.tables import format_markdown
    from saerad.fileio import check_output_dir

    check_output_dir(out)
    preds, _ = read_reports(predictions, id_field=id_field, text_field=text_field)
    refs, _ = read_reports(references, id_field=id_field, text_field=text_field)
    metrics = score_reports(preds, refs, out, _options(resamples, seed, meteor, chexbert))
    typer.echo(format_markdown(metrics))


@app.command("evaluate")
def evaluate_cmd(
    dataset: DatasetOption,
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help="Dataset folder."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    bundle: BundleOption = None,
    baselines: bool = typer.Option(False, "--baselines", help="Also score normal-template and retrieval baselines."),
    embeddings: Path = typer.Option(None, "--embeddings", help="Class tokens (saerad embed) to reuse."),
    encoder: str = typer.Option(None, "--encoder", help="Encoder spec for the retrieval baseline (default: 'default')."),
    reports_root: Path = typer.Option(None, "--reports-root", help="MIMIC-CXR: folder of the mimic-cxr-reports files."),
    split: Literal["test", "all"] = typer.Option(
        "test", "--split",
        help="test: the dataset's test patients (official split, else the patient hash `saerad build` leaves out); "
        "all: every study of --root (a folder no model has seen).",
    ),
    pool: Path = typer.Option(
        None, "--pool", help="Training folder of the same dataset kind the retrieval baseline draws from "
        "(default: the non-test patients of --root; required with --split all --baselines).",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate only the first N studies (smoke runs)."),
    device: DeviceOption = "auto",
    resamples: int = typer.Option(500, "--resamples", min=0),
    seed: int = typer.Option(0, "--seed"),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor"),
    chexbert: bool = typer.Option(True, "--chexbert/--no-chexbert"),
) -> None:
    """Generate findings for a dataset's studies (bundle and/or baselines) and score them."""
    from saerad.eval.evaluate import evaluate_dataset
    from saerad.eval.tables import format_markdown
    from saerad.fileio import check_output_dir

    check_output_dir(out)
    kwargs = {"reports_root": reports_root} if reports_root is not None else {}
    metrics = evaluate_dataset(
        dataset,
        root,
        out,
        bundle=bundle,
        baselines=baselines,
        embeddings=embeddings,
        encoder=encoder,
        device=device,
        split=split,
        pool=pool,
        limit=limit,
        options=_options(resamples, seed, meteor, chexbert),
        dataset_kwargs=kwargs,
    )
    typer.echo(format_markdown(metrics))
