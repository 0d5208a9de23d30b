"""nih-cxr14 loader: label mapping, label-derived references, boxes, bad metadata."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from saerad.datasets import load_dataset
from saerad.datasets.nih_cxr14 import load_boxes, map_labels
from saerad.errors import ConfigError
from saerad.radtext import label_report
from saerad.radtext.conditions import CONDITIONS

HEADER = "image,image_index,patient_id,follow_up,age,sex,view,finding_labels,source_folder\n"


def _folder(tmp_path: Path, rows: list[str], boxes: str | None = None) -> Path:
    (tmp_path / "metadata.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    if boxes is not None:
        (tmp_path / "boxes.csv").write_text(boxes)
    return tmp_path


def test_mapping_to_chexpert_conditions() -> None:
    labels, unknown = map_labels(["Effusion", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Fibrosis"])
    assert unknown == []
    on = {k for k, v in labels.items() if v}
    assert on == {"Pleural Effusion", "Lung Opacity", "Lung Lesion", "Pleural Other", "Fibrosis"}
    assert set(CONDITIONS) <= set(labels) and labels["No Finding"] == 0
    labels, _ = map_labels(["No Finding"])
    assert {k for k, v in labels.items() if v} == {"No Finding"}


def test_loader_writes_label_derived_references(tmp_path: Path) -> None:
    root = _folder(tmp_path, [
        "images/a_000.png,a_000.png,7,0,60,M,AP,Edema|Effusion,Pneumonia",
        "images/b_001.png,b_001.png,8,1,40,F,PA,No Finding,No_findings",
    ])
    a, b = load_dataset("nih-cxr14", root)
    assert (a.study_id, a.patient_id, a.view) == ("a_000", "7", "AP")
    assert a.image_paths == (root / "images" / "a_000.png",)
    assert a.findings == "There is pulmonary edema. There is a pleural effusion."
    assert a.labels["Edema"] == 1 and a.labels["Pleural Effusion"] == 1 and a.labels["No Finding"] == 0
    assert b.findings == "No acute cardiopulmonary abnormality." and b.labels["No Finding"] == 1
    assert a.extra["source_folder"] == "Pneumonia"


def test_unknown_labels_are_listed_and_bad_folders_refused(tmp_path: Path, caplog) -> None:
    root = _folder(tmp_path, ["images/a.png,a.png,7,0,60,M,AP,Edema|Sarcoidosis|Sarcoidosis,Pneumonia"])
    with caplog.at_level(logging.WARNING):
        (study,) = load_dataset("nih-cxr14", root)
    assert "Sarcoidosis (2)" in caplog.text and study.labels["Edema"] == 1
    (tmp_path / "metadata.csv").write_text("image,patient_id\nimages/a.png,7\n")
    with pytest.raises(ConfigError, match="finding_labels"):
        load_dataset("nih-cxr14", root)
    with pytest.raises(ConfigError, match="not found"):
        load_dataset("nih-cxr14", tmp_path / "nowhere")


def test_boxes(tmp_path: Path) -> None:
    root = _folder(tmp_path, [], "image_index,finding,x_min,y_min,x_max,y_max\na_000.png,Effusion,0.1,0.5,0.4,0.9\n")
    (box,) = load_boxes(root)["a_000"]
    assert (box.finding, box.condition, box.x_min, box.y_max) == ("Effusion", "Pleural Effusion", 0.1, 0.9)
    (tmp_path / "boxes.csv").write_text("image_index,finding,x_min,y_min,x_max,y_max\na.png,Mass,0.5,0.5,0.2,0.9\n")
    with pytest.raises(ConfigError, match="min < max"):
        load_boxes(root)


def test_real_nih_cxr14(shared_data: Path) -> None:
    root = shared_data / "nih-cxr14"
    if not root.is_dir():
        pytest.skip("nih-cxr14 absent")
    studies = load_dataset("nih-cxr14", root)
    assert len(studies) == 772 and len({s.patient_id for s in studies}) == 522
    assert all(s.primary_image.is_file() for s in studies)
    # every reference text reads back, through the rule labeller, as the image's own labels
    for s in studies:
        read = label_report(s.findings)
        for condition in CONDITIONS:
            value = read[condition]
            got = 0 if value is None or value != value else int(value in (1, -1))
            expected = s.labels[condition] or (condition == "Lung Opacity" and s.labels["Fibrosis"])
            assert got == expected, (s.study_id, condition)
    boxes = load_boxes(root)
    assert len(boxes) == 22 and all(b.condition for bs in boxes.values() for b in bs)
