"""NIH ChestX-ray14 (Wang et al., CVPR 2017): frontal X-rays with NLP-mined finding labels, no reports.

Layout (``../shared/data/nih-cxr14`` style)::

    ROOT/metadata.csv   image, image_index, patient_id, follow_up, age, sex, view (PA/AP),
                        finding_labels ("Edema|Effusion" or "No Finding"), source_folder, ...
    ROOT/images/*.png   the images (``image`` is relative to ROOT)
    ROOT/boxes.csv      optional: image_index, finding, x_min, y_min, x_max, y_max (0..1 of the image)

NIH labels map to the 14 CheXpert conditions by :data:`NIH_TO_CHEXPERT` (Effusion -> Pleural
Effusion, Infiltration -> Lung Opacity, Mass and Nodule -> Lung Lesion, Pleural_Thickening ->
Pleural Other; Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia and Pneumothorax keep
their names); Emphysema, Fibrosis and Hernia have no CheXpert condition and stay extra findings.
No parent condition is implied (Edema does not add Lung Opacity), as in the CheXpert labeller.

There is no report text: each image's ``findings`` is written from its labels by one deterministic
sentence template, :func:`saerad.radtext.phrasebook.findings_text` (one sentence per finding in
condition order; "No Finding" -> the normal statement). Such references are label-derived: text
metrics against them measure agreement with a template, not with a radiologist's prose.

Each image is its own study; patients have several images, so every split is by ``patient_id``.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from saerad.datasets.base import Study
from saerad.errors import ConfigError
from saerad.radtext.conditions import CONDITIONS, NO_FINDING
from saerad.radtext.phrasebook import EXTRA_SENTENCES, findings_text

log = logging.getLogger(__name__)

NIH_TO_CHEXPERT: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "No Finding": NO_FINDING,
}
EXTRA_FINDINGS: tuple[str, ...] = ("Emphysema", "Fibrosis", "Hernia")
# NIH's box table spells one finding differently from its label table.
_BOX_NAMES = {"Infiltrate": "Infiltration"}
assert set(EXTRA_FINDINGS) == set(EXTRA_SENTENCES)

REQUIRED_COLUMNS = ("image", "patient_id", "finding_labels")


@dataclass(frozen=True)
class TruthBox:
    """A radiologist's box from ``boxes.csv``: NIH finding name, its CheXpert condition (None for
    extras) and the corners as fractions 0..1 of the image."""

    finding: str
    condition: str | None
    x_min: float
    y_min: float
    x_max: float
    y_max: float


def map_labels(nih_labels: list[str]) -> tuple[dict[str, int], list[str]]:
    """NIH label names -> (``{finding: 0/1}`` over the 14 conditions and the extras, unknown names)."""
    present, unknown = set(), []
    for name in nih_labels:
        if name in NIH_TO_CHEXPERT:
            present.add(NIH_TO_CHEXPERT[name])
        elif name in EXTRA_FINDINGS:
            present.add(name)
        else:
            unknown.append(name)
    labels = {c: int(c in present) for c in CONDITIONS}
    labels.update({e: int(e in present) for e in EXTRA_FINDINGS})
    if present - {NO_FINDING}:
        labels[NO_FINDING] = 0  # a finding and "No Finding" together: the finding wins
    return labels, unknown


def load_nih_cxr14(root: Path) -> list[Study]:
    """One :class:`Study` per metadata row (see the module docstring)."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ConfigError(f"{meta} not found: is {root} the nih-cxr14 folder?")
    with meta.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{meta} lacks the column(s) {', '.join(missing)}: is {root} the nih-cxr14 folder?")
        rows = list(reader)
    if not rows:
        raise ConfigError(f"{meta} has no rows")
    unknown_counts: Counter[str] = Counter()
    studies = []
    for row in rows:
        names = [n.strip() for n in (row["finding_labels"] or "").split("|") if n.strip()]
        if not names:
            raise ConfigError(f"{meta}: image {row['image']!r} has no finding_labels (use 'No Finding' for none)")
        labels, unknown = map_labels(names)
        unknown_counts.update(unknown)
        image_id = Path(row["image"]).stem
        findings = {f for f, v in labels.items() if v and f != NO_FINDING}
        studies.append(
            Study(
                study_id=image_id,
                patient_id=str(row["patient_id"]),
                image_paths=(root / row["image"],),
                image_ids=(image_id,),
                view=(row.get("view") or None),
                findings=findings_text(findings),
                labels=labels,
                extra={k: row.get(k) or "" for k in ("source_folder", "age", "sex", "finding_labels")},
            )
        )
    if unknown_counts:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(unknown_counts.items()))
        log.warning("%s: unknown label name(s) ignored: %s", meta, listed)
    return studies


def load_boxes(root: Path) -> dict[str, list[TruthBox]]:
    """Image id -> radiologist boxes from ``ROOT/boxes.csv`` (empty when the file is absent)."""
    path = Path(root) / "boxes.csv"
    if not path.is_file():
        return {}
    out: dict[str, list[TruthBox]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), 2):
            try:
                corners = [float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
                finding = _BOX_NAMES.get(row["finding"].strip(), row["finding"].strip())
                image_id = Path(row["image_index"]).stem
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}:{line}: not a box row ({exc})") from exc
            x0, y0, x1, y1 = corners
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ConfigError(f"{path}:{line}: box corners must be fractions with min < max")
            condition = NIH_TO_CHEXPERT.get(finding)
            out.setdefault(image_id, []).append(TruthBox(finding, condition, x0, y0, x1, y1))
    return out
