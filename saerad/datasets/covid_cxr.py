"""The COVID-19 image data collection snapshot in ``../shared/data/covid-cxr``.

Each metadata row is one frontal image; the reference text is ``clinical_notes`` (case notes, not a
structured radiology report), kept as ``findings`` so evaluation code treats it like a report.
Patients have several images: split by ``patient_id``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from saerad.datasets.base import Study
from saerad.errors import ConfigError


def load_covid_cxr(root: Path, *, require_notes: bool = False) -> list[Study]:
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ConfigError(f"{meta} not found: is {root} the covid-cxr folder?")
    studies = []
    with meta.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            path = root / row["image"]
            notes = (row.get("clinical_notes") or "").strip() or None
            if require_notes and notes is None:
                continue
            image_id = Path(row["image"]).stem
            studies.append(
                Study(
                    study_id=image_id,
                    patient_id=str(row["patientid"]),
                    image_paths=(path,),
                    image_ids=(image_id,),
                    view=row.get("view") or None,
                    findings=notes,
                    extra={"finding": row.get("finding", ""), "license": row.get("license", "")},
                )
            )
    return studies
