"""Scoring reports, the Markdown tables and the score / label-reports commands (METEOR off except where tested)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from saerad.errors import ConfigError
from saerad.eval.scoring import ScoreOptions, score_reports
from saerad.radtext import CONDITIONS

REFS = {
    "s1": "Mild cardiomegaly. No pleural effusion.",
    "s2": "The lungs are clear. No pneumothorax.",
    "s3": "Small left pleural effusion with adjacent atelectasis.",
    "s4": "Right lower lobe consolidation concerning for pneumonia.",
    "s5": "",  # dropped and counted
}
PREDS = {
    "s1": "Moderate cardiomegaly. No effusion.",
    "s2": "Lungs are clear.",
    "s3": "Small left pleural effusion.",
    "s4": "No acute cardiopulmonary process.",
    "s5": "Anything.",
}


class FakeCheXbert:
    """Stands in for CheXbert: everything Cardiomegaly-positive."""

    source = "fake"

    def label(self, texts):
        out = np.full((len(texts), 14), np.nan)
        out[:, CONDITIONS.index("Cardiomegaly")] = 1
        return out


def _opts(**kw) -> ScoreOptions:
    return ScoreOptions(n_resamples=50, meteor=False, chexbert=False, **kw)


def test_score_writes_outputs(tmp_path: Path) -> None:
    metrics = score_reports(PREDS, REFS, tmp_path, _opts())
    assert metrics["n_studies"] == 4 and metrics["dropped"]["empty_reference"] == 1
    system = metrics["systems"]["predictions"]
    assert system["chexbert"] == {"unavailable": "disabled (--no-chexbert)"}
    assert system["text"]["METEOR"] == {"unavailable": "disabled (--no-meteor)"}
    rule = system["chexpert_rule"]["uncertain_positive"]
    assert 0 < rule["micro_14"]["value"] <= 1 and len(rule["micro_14"]["ci95"]) == 2
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["systems"]["predictions"]["text"]["BLEU-4"]["value"] == system["text"]["BLEU-4"]["value"]
    markdown = (tmp_path / "metrics.md").read_text()
    assert "unavailable: disabled (--no-chexbert)" in markdown and "CheXpert-rule" in markdown
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s1", "s2", "s3", "s4"]
    assert rows[0]["labels"]["chexpert_rule"]["reference"]["Cardiomegaly"] == 1
    assert set(rows[0]["scores"]) == {"BLEU-4", "METEOR", "ROUGE-L", "ROUGE-L (rouge-score)"}


def test_chexbert_columns_use_chexbert_labels_only(tmp_path: Path) -> None:
    metrics = score_reports(PREDS, REFS, tmp_path, ScoreOptions(n_resamples=20, meteor=False, chexbert=FakeCheXbert()))
    chex = metrics["systems"]["predictions"]["chexbert"]["uncertain_positive"]
    # fake labels agree perfectly on one condition: F1 1 there, 0 elsewhere
    assert chex["per_condition"]["Cardiomegaly"]["value"] == 1.0
    assert chex["macro_14"]["value"] == pytest.approx(1 / 14)
    assert metrics["systems"]["predictions"]["chexpert_rule"]["uncertain_positive"]["macro_14"]["value"] != pytest.approx(1 / 14)


def test_unconfigured_chexbert_and_missing_java_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from saerad.eval.settings import EvalSettings

    monkeypatch.delenv("SAERAD_CHEXBERT_WEIGHTS", raising=False)
    opts = ScoreOptions(n_resamples=10, meteor=True, chexbert=None, settings=EvalSettings(java="no-such-java"))
    metrics = score_reports(PREDS, REFS, tmp_path, opts)
    system = metrics["systems"]["predictions"]
    assert "SAERAD_CHEXBERT_WEIGHTS" in system["chexbert"]["unavailable"]
    assert "Java" in system["text"]["METEOR"]["unavailable"]


def test_missing_prediction_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no report for 1 of 4"):
        score_reports({k: v for k, v in PREDS.items() if k != "s2"}, REFS, tmp_path, _opts())


def test_cli_label_reports_and_score(tmp_path: Path) -> None:
    from saerad.cli import _register, app

    _register()
    runner = CliRunner()
    src = tmp_path / "in.csv"
    src.write_text('study_id,findings\na1,"No pleural effusion or pneumothorax."\na2,Possible left lower lobe pneumonia.\n')
    result = runner.invoke(app, ["label-reports", str(src), "--text-field", "findings", "--out", str(tmp_path / "labels.csv")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "labels.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["study_id", *CONDITIONS]
    assert table[0]["Pleural Effusion"] == "0" and table[0]["Fracture"] == "" and table[1]["Pneumonia"] == "-1"

    for name, data in (("pred.jsonl", PREDS), ("ref.jsonl", REFS)):
        (tmp_path / name).write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in data.items()))
    args = ["score", "--predictions", str(tmp_path / "pred.jsonl"), "--references", str(tmp_path / "ref.jsonl")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--no-meteor", "--no-chexbert", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    assert "| predictions |" in result.output and (tmp_path / "o" / "metrics.json").is_file()
