"""MIMIC-CXR: MIMIC-CXR-JPG images + the official split + metadata + mimic-cxr-reports text.

Expected layout (PhysioNet downloads, unchanged)::

    ROOT/mimic-cxr-2.0.0-split.csv.gz        dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz     dicom_id, ..., ViewPosition, ...
    ROOT/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg
    REPORTS/files/pXX/pXXXXXXXX/sXXXXXXXX.txt    (mimic-cxr-reports; REPORTS = reports_root)

``reports_root`` defaults to the first of ROOT, ROOT/mimic-cxr-reports and
ROOT/../mimic-cxr-reports that has a ``files`` folder with report text files.

Frontal image rule (one image reports a study): ViewPosition PA, else AP, else another frontal
projection (AP AXIAL, PA/AP LLD/RLD); lateral-type views (LATERAL, LL, LAO, RAO, SWIMMERS, XTABLE
LATERAL) and empty view positions never; ties broken by the lowest dicom_id. The chosen image comes
first in ``Study.image_paths``; the study's other images follow in dicom_id order.

Dropped studies are counted in ``StudyList.dropped`` (and logged, without identifiers):
``no_frontal`` (no frontal image in the metadata), ``missing_image`` (the chosen JPEG is not on
disk, only when ``require_images``), ``no_report`` (report file missing, only when
``require_findings``), ``no_findings`` (report without a findings section, only when
``require_findings``). Without ``require_findings`` such studies are kept with ``findings=None``
so image-only stages can use them; the evaluation runner drops and counts them itself.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from saerad.datasets.base import Study
from saerad.errors import ConfigError
from saerad.radtext.sections import extract_findings, extract_impression

log = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
FRONTAL_RANK = {"PA": 0, "AP": 1, "AP AXIAL": 2, "PA LLD": 2, "AP LLD": 2, "PA RLD": 2, "AP RLD": 2}


class StudyList(list):
    """A list of :class:`Study` that also says how many studies were dropped and why."""

    def __init__(self, studies: Iterable[Study] = (), dropped: dict[str, int] | None = None) -> None:
        super().__init__(studies)
        self.dropped: dict[str, int] = dict(dropped or {})


def _read_csv_gz(path: Path) -> Iterable[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{root / name} not found: is {root} the MIMIC-CXR-JPG folder?")


def _reports_root(root: Path, reports_root: Path | None) -> Path:
    if reports_root is not None:
        reports_root = Path(reports_root)
        if not (reports_root / "files").is_dir():
            raise ConfigError(f"reports folder {reports_root} has no 'files' subfolder")
        return reports_root
    for candidate in (root, root / "mimic-cxr-reports", root.parent / "mimic-cxr-reports"):
        files = candidate / "files"
        if files.is_dir() and next(files.glob("p*/p*/s*.txt"), None) is not None:
            return candidate
    return root


def study_dir(root: Path, subject_id: str, study_id: str) -> Path:
    """``ROOT/files/pXX/pXXXXXXXX/sXXXXXXXX`` for numeric ids."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def choose_frontal(views: dict[str, str]) -> str | None:
    """The reporting image of a study from ``{dicom_id: ViewPosition}`` (rule in the module docstring)."""
    ranked = [(FRONTAL_RANK[v.strip().upper()], dicom) for dicom, v in views.items() if v and v.strip().upper() in FRONTAL_RANK]
    return min(ranked)[1] if ranked else None


def load_mimic_cxr(
    root: Path,
    *,
    reports_root: str | Path | None = None,
    splits: Iterable[str] | None = None,
    require_findings: bool = False,
    require_images: bool = False,
) -> StudyList:
    """Studies of MIMIC-CXR (see module docstring); ``splits`` e.g. ``("test",)`` keeps only those."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"MIMIC-CXR folder {root} does not exist")
    wanted = {s.strip().lower() for s in splits} if splits else None
    split_rows = _read_csv_gz(_find(root, SPLIT_FILE))
    study_split: dict[tuple[str, str], str] = {}
    for row in split_rows:
        split = row["split"].strip().lower()
        if wanted is not None and split not in wanted:
            continue
        study_split[(row["subject_id"].strip(), row["study_id"].strip())] = split
    views: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for row in _read_csv_gz(_find(root, METADATA_FILE)):
        key = (row["subject_id"].strip(), row["study_id"].strip())
        if key in study_split:
            views[key][row["dicom_id"].strip()] = (row.get("ViewPosition") or "").strip()
    reports = _reports_root(root, Path(reports_root) if reports_root is not None else None)
    dropped = {"no_frontal": 0, "missing_image": 0, "no_report": 0, "no_findings": 0}
    studies = StudyList()
    for key in sorted(study_split, key=lambda k: (int(k[0]) if k[0].isdigit() else k[0], k[1])):
        subject_id, study_id = key
        frontal = choose_frontal(views.get(key, {}))
        if frontal is None:
            dropped["no_frontal"] += 1
            continue
        folder = study_dir(root, subject_id, study_id)
        dicoms = [frontal] + sorted(d for d in views[key] if d != frontal)
        if require_images and not (folder / f"{frontal}.jpg").is_file():
            dropped["missing_image"] += 1
            continue
        report_path = study_dir(reports, subject_id, study_id).with_suffix(".txt")
        text = report_path.read_text(encoding="utf-8", errors="replace") if report_path.is_file() else None
        findings = extract_findings(text) if text else None
        if require_findings and text is None:
            dropped["no_report"] += 1
            continue
        if require_findings and not findings:
            dropped["no_findings"] += 1
            continue
        studies.append(
            Study(
                study_id=study_id,
                patient_id=subject_id,
                image_paths=tuple(folder / f"{d}.jpg" for d in dicoms),
                image_ids=tuple(dicoms),
                view=views[key][frontal] or None,
                findings=findings,
                impression=extract_impression(text) if text else None,
                split=study_split[key],
                extra={"has_report": "1" if text is not None else "0"},
            )
        )
    studies.dropped = {k: v for k, v in dropped.items() if v}
    log.info("MIMIC-CXR: %d studies loaded, dropped %s", len(studies), studies.dropped or "none")
    return studies
