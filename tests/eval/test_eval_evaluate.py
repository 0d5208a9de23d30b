"""``saerad evaluate``: which studies are scored, the retrieval pool, the added summaries, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saerad.datasets.split import DEFAULT_POLICY
from saerad.encoders.store import EmbeddingSet
from saerad.errors import ConfigError
from saerad.eval.baselines import NORMAL_TEMPLATE
from saerad.eval.evaluate import add_summaries, evaluate_dataset, has_finding, reported_conditions
from saerad.eval.scoring import ScoreOptions
from saerad.radtext import CONDITIONS, label_reports

FINDINGS = ["Mild cardiomegaly.", "The lungs are clear.", "Small right effusion.", "Left basilar atelectasis."]


def _opts() -> ScoreOptions:
    return ScoreOptions(n_resamples=20, meteor=False, chexbert=False)


def _folder(root: Path, n: int = 40, prefix: str = "") -> list[str]:
    """A folder dataset with reports.csv: two images per patient, four clustered report texts."""
    root.mkdir(parents=True)
    rows, ids = [], []
    for i in range(n):
        rows.append({"image": f"{prefix}img{i}.png", "report": FINDINGS[i % 4], "patient_id": f"{prefix}p{i // 2}",
                     "study_id": f"{prefix}s{i}"})
        ids.append(f"{prefix}img{i}")
    with (root / "reports.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return ids


def _tokens(ids: list[str], path: Path) -> Path:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    # image i belongs to cluster i % 4, whatever its prefix
    tokens = np.stack([centers[int(i.rpartition("img")[2]) % 4] + 0.01 * rng.normal(size=8) for i in ids])
    EmbeddingSet(ids=ids, tokens=torch.tensor(tokens, dtype=torch.float32), encoder="test").save(path)
    return path


def test_test_split_with_baselines(tmp_path: Path) -> None:
    ids = _folder(tmp_path / "data")
    emb = _tokens(ids, tmp_path / "emb.safetensors")
    metrics = evaluate_dataset("folder", tmp_path / "data", tmp_path / "out", baselines=True, embeddings=emb, options=_opts())
    assert set(metrics["systems"]) == {"normal-template", "retrieval"}
    test_patients = {f"p{i // 2}" for i in range(40) if DEFAULT_POLICY.role(f"p{i // 2}") == "test"}
    assert metrics["n_studies"] == 2 * len(test_patients) > 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    for row in (r for r in rows if r["system"] == "retrieval"):  # same cluster -> same text, another patient
        assert row["prediction"] == row["reference"]
        assert f"p{int(row['retrieved_image_id'][3:]) // 2}" not in test_patients
    assert all(r["prediction"] == NORMAL_TEMPLATE for r in rows if r["system"] == "normal-template")
    retrieval, template = metrics["systems"]["retrieval"], metrics["systems"]["normal-template"]
    assert retrieval["text"]["BLEU-4"]["value"] > 0.99
    assert template["share_with_finding"] == 0.0 and 0 < retrieval["share_with_finding"] < 1
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["systems"]["retrieval"]["macro_reported"] == retrieval["macro_reported"]


def test_split_all_scores_every_study_against_an_outside_pool(tmp_path: Path) -> None:
    ids = _folder(tmp_path / "outside", n=12, prefix="o")
    pool_ids = _folder(tmp_path / "pool", n=24, prefix="t")
    emb = _tokens(ids + pool_ids, tmp_path / "emb.safetensors")
    metrics = evaluate_dataset(
        "folder", tmp_path / "outside", tmp_path / "out", baselines=True, split="all", pool=tmp_path / "pool",
        embeddings=emb, options=_opts(),
    )
    assert metrics["n_studies"] == 12 and metrics["settings"]["split"] == "all"
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["retrieved_image_id"].startswith("timg") for r in rows if r["system"] == "retrieval")
    assert metrics["systems"]["retrieval"]["macro_reported"] == 1.0  # every retrieved text matches its cluster


def test_bad_pools_and_splits_are_one_clear_error(tmp_path: Path) -> None:
    _folder(tmp_path / "data", n=8)
    (tmp_path / "empty").mkdir()
    cases = [
        ({"split": "all"}, "needs --pool"),
        ({"split": "all", "pool": tmp_path / "empty"}, "no PNG, JPEG or DICOM"),
        ({"split": "all", "pool": tmp_path / "missing"}, "not a folder"),
        ({"split": "validate"}, "--split must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            evaluate_dataset("folder", tmp_path / "data", tmp_path / "out", baselines=True, options=_opts(), **kwargs)
    with pytest.raises(ConfigError, match="nih-cxr14 folder"):  # a pool of another kind
        evaluate_dataset("nih-cxr14", tmp_path / "data", tmp_path / "out", baselines=True, split="all",
                         pool=tmp_path / "data", options=_opts())
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_summaries_helpers() -> None:
    labels = label_reports(["There is a pleural effusion.", "No acute cardiopulmonary abnormality.", "Possible edema."])
    assert has_finding(labels).tolist() == [True, False, True]
    refs = label_reports(["There is a pleural effusion."] * 20 + ["There is pulmonary edema."] * 3)
    assert reported_conditions(refs) == ["Pleural Effusion", "No Finding"]
    assert len(CONDITIONS) == labels.shape[1]


def test_subgroups_are_scored_within_each_value() -> None:
    refs = label_reports(["There is pulmonary edema.", "There is pulmonary edema.", "No acute cardiopulmonary abnormality."])
    preds = label_reports(["There is pulmonary edema.", "No acute cardiopulmonary abnormality.", "There is pulmonary edema."])
    metrics = {"settings": {}, "systems": {"model": {}}}
    groups = {"a": "Pneumonia", "b": "Pneumonia", "c": "No_findings"}
    add_summaries(metrics, ["a", "b", "c"], refs, {"model": preds}, subgroup=("source_folder", groups))
    within = metrics["systems"]["model"]["subgroups"]["source_folder=Pneumonia"]
    assert within["n"] == 2 and within["per_condition"]["Edema"] == pytest.approx(2 / 3)
    assert metrics["systems"]["model"]["subgroups"]["source_folder=No_findings"]["per_condition"]["Edema"] == 0.0
    assert metrics["systems"]["model"]["share_with_finding"] == pytest.approx(2 / 3)
