"""A folder of X-ray files, optionally with a CSV of reports.

Without a CSV every image file under ``root`` is one study with no report; with ``reports.csv``
(columns ``image`` relative to root, ``report``, optional ``patient_id``, ``study_id``) each row is
one study whose findings are the report text.
"""

from __future__ import annotations

import csv
from pathlib import Path

from saerad.datasets.base import Study
from saerad.errors import ConfigError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})


def image_id_for(path: Path, root: Path) -> str:
    """A stable id: the path relative to the dataset root, without suffix, with '/' separators."""
    return path.relative_to(root).with_suffix("").as_posix()


def load_folder(root: Path, *, reports_csv: str | Path | None = None) -> list[Study]:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dataset folder {root} does not exist")
    csv_path = Path(reports_csv) if reports_csv else root / "reports.csv"
    if csv_path.is_file():
        return _from_csv(root, csv_path)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ConfigError(f"no PNG, JPEG or DICOM files under {root}")
    studies = []
    for path in paths:
        image_id = image_id_for(path, root)
        studies.append(Study(study_id=image_id, patient_id=image_id, image_paths=(path,), image_ids=(image_id,)))
    return studies


def _from_csv(root: Path, csv_path: Path) -> list[Study]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"image", "report"} <= set(rows[0]):
        raise ConfigError(f"{csv_path} needs the columns 'image' and 'report'")
    studies = []
    for row in rows:
        path = root / row["image"]
        image_id = image_id_for(path, root)
        studies.append(
            Study(
                study_id=row.get("study_id") or image_id,
                patient_id=row.get("patient_id") or image_id,
                image_paths=(path,),
                image_ids=(image_id,),
                findings=(row.get("report") or "").strip() or None,
            )
        )
    return studies
