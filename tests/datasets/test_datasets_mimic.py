"""MIMIC-CXR loader on a tiny fake tree in the exact PhysioNet layout (generated here)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from saerad.datasets import load_dataset
from saerad.datasets.mimic_cxr import choose_frontal
from saerad.errors import ConfigError

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  Cough.
 FINDINGS:
 {findings}
 IMPRESSION:
 {impression}
"""

# (subject, study, split, [(dicom, view)], report findings or None for no file, "" for no section)
STUDIES = [
    ("10000032", "50414267", "test", [("d-lat", "LATERAL"), ("d-pa", "PA"), ("d-ap", "AP")], "Mild cardiomegaly."),
    ("10000032", "53189527", "train", [("e-ap2", "AP"), ("e-ap1", "AP")], "Lungs are clear."),
    ("10000764", "57375967", "test", [("f-lat", "LATERAL"), ("f-ll", "LL")], "Small effusion."),  # no frontal
    ("10000898", "50771383", "test", [("g-pa", "PA")], None),  # no report file
    ("10000935", "51178377", "validate", [("h-ap", "AP AXIAL")], ""),  # report without findings
]


def _write_csv_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _tree(root: Path, reports: Path) -> None:
    split_rows, meta_rows = [], []
    for subject, study, split, images, findings in STUDIES:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        for dicom, view in images:
            (folder / f"{dicom}.jpg").write_bytes(b"\xff\xd8\xff")
            split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view, "Rows": "3056"})
        if findings is not None:
            text = REPORT.format(findings=findings, impression="No acute process.") if findings else " IMPRESSION: Normal.\n"
            report = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(text)
    _write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", split_rows)
    _write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta_rows)


def test_frontal_rule() -> None:
    assert choose_frontal({"b": "AP", "c": "PA", "a": "LATERAL"}) == "c"
    assert choose_frontal({"z": "AP", "y": "AP"}) == "y"  # lowest dicom id
    assert choose_frontal({"x": "AP AXIAL", "w": "LL"}) == "x"
    assert choose_frontal({"x": "LATERAL", "w": ""}) is None


def test_load_with_separate_reports_root(tmp_path: Path) -> None:
    root, reports = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr-reports"
    _tree(root, reports)  # reports beside the JPG tree: found without being named
    studies = load_dataset("mimic-cxr", root)
    assert [s.study_id for s in studies] == ["50414267", "53189527", "50771383", "51178377"]
    assert studies.dropped == {"no_frontal": 1}
    first = studies[0]
    assert first.patient_id == "10000032" and first.split == "test" and first.view == "PA"
    assert first.image_ids == ("d-pa", "d-ap", "d-lat")  # frontal first, then the rest by dicom id
    assert first.primary_image == root / "files/p10/p10000032/s50414267/d-pa.jpg"
    assert first.findings == "Mild cardiomegaly." and first.impression == "No acute process."
    assert studies[1].image_ids[0] == "e-ap1"
    assert studies[2].findings is None and studies[3].findings is None


def test_require_findings_and_split_filter(tmp_path: Path) -> None:
    root, reports = tmp_path / "jpg", tmp_path / "elsewhere"
    _tree(root, reports)
    studies = load_dataset("mimic-cxr", root, reports_root=reports, splits=("test",), require_findings=True, require_images=True)
    assert [s.study_id for s in studies] == ["50414267"]
    assert studies.dropped == {"no_frontal": 1, "no_report": 1}


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MIMIC-CXR-JPG"):
        load_dataset("mimic-cxr", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("mimic-cxr", tmp_path / "nope")
