"""IU X-ray (Indiana University Chest X-ray Collection), reports with optional images.

Layout (``../shared/data/iu-reports`` style)::

    ROOT/reports.jsonl        one object per report: uid, indication, comparison, findings,
                              impression, images (image ids such as "CXR1_1_IM-0001-3001")
    ROOT/images/<id>.png      optional (Open-i PNGs); also .jpg/.jpeg/.dcm
    ROOT/projections.csv      optional: uid, filename, projection (Frontal/Lateral), as in the
                              common Kaggle packaging; frontal images are put first

One report is one study and, lacking patient ids in the release, one patient (uid). Studies
without images on disk keep ``image_paths=()`` so report-only uses (labeller, text metrics,
composer corpora) work without the images. There is no official split: evaluation uses a
deterministic patient-hash split (:mod:`saerad.datasets.split`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from saerad.datasets.base import Study
from saerad.errors import ConfigError
from saerad.radtext.text import clean_text

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def _projections(root: Path) -> dict[str, str]:
    path = root / "projections.csv"
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            stem = Path(row.get("filename", "")).stem.removesuffix(".dcm")  # "1_IM-0001-4001.dcm.png"
            projection = (row.get("projection") or "").strip()
            out[stem] = out[f"CXR{stem}"] = projection  # report image ids carry a "CXR" prefix
    return out


def _image_file(images: Path, image_id: str) -> Path | None:
    names = [f"{image_id}{suffix}" for suffix in _IMAGE_SUFFIXES] + [f"{image_id.removeprefix('CXR')}.dcm.png"]
    for name in names:
        candidate = images / name
        if candidate.is_file():
            return candidate
    return None


def load_iu_xray(root: Path, *, require_findings: bool = False, require_images: bool = False) -> list[Study]:
    root = Path(root)
    path = root / "reports.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {root} the IU X-ray folder?")
    projections = _projections(root)
    images_dir = root / "images"
    studies: list[Study] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                uid = str(row["uid"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{line_no} is not a report object with a 'uid': {exc}") from exc
            findings = clean_text(row.get("findings")) or None
            if require_findings and not findings:
                continue
            ids = [str(i) for i in row.get("images") or []]
            # Frontal first when projections are known, else the release order.
            ids.sort(key=lambda i: 0 if projections.get(i, "").lower() == "frontal" else 1)
            found = [(i, _image_file(images_dir, i)) for i in ids] if images_dir.is_dir() else []
            found = [(i, p) for i, p in found if p is not None]
            if require_images and not found:
                continue
            view = projections.get(found[0][0]) if found else None
            studies.append(
                Study(
                    study_id=uid,
                    patient_id=uid,
                    image_paths=tuple(p for _, p in found),
                    image_ids=tuple(i for i, _ in found),
                    view=view or None,
                    findings=findings,
                    impression=clean_text(row.get("impression")) or None,
                    extra={"indication": clean_text(row.get("indication"))},
                )
            )
    return studies
