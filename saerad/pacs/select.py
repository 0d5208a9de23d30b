"""Which image of a study to report: the frontal chest radiograph, decided from QIDO-RS attributes.

The model was trained on frontal (PA/AP) chest radiographs, so everything else is skipped with a
reason the user sees: non-image objects (SRs, presentation states, key objects), DX "for processing"
images (raw detector data, not meant for display), lateral or other views, images whose view position
is not recorded, other body parts, images above the pixel limit. PA ranks before AP (the standard
projection, without the magnified heart of AP films), then series and instance number. ``instance``
overrides the view and body-part checks for a user who knows which image to use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

from saerad.pacs.errors import NoFrontalImageError

if TYPE_CHECKING:
    from pydicom import Dataset

RADIOGRAPH_CLASSES = {
    ComputedRadiographyImageStorage: "CR",
    DigitalXRayImageStorageForPresentation: "DX",
    SecondaryCaptureImageStorage: "SC",
}
FRONTAL_VIEWS = ("PA", "AP")
CHEST_WORDS = ("CHEST", "THORAX", "LUNG")


@dataclass(frozen=True)
class Candidate:
    """An instance saerad may report, with the UIDs WADO-RS needs."""

    study_uid: str
    series_uid: str
    sop_uid: str
    view: str


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]  # best first
    skipped: dict[str, str]  # SOP Instance UID -> why it was not used


def select_frontal(instances: list[Dataset], *, max_pixels: int, instance: str | None = None) -> Selection:
    """Rank the study's usable frontal images; :class:`NoFrontalImageError` when there is none."""
    ranked: list[tuple[tuple, Candidate]] = []
    skipped: dict[str, str] = {}
    for ds in instances:
        sop_uid = str(ds.get("SOPInstanceUID", "") or "")
        if instance is not None and sop_uid != instance:
            continue
        reason = _unusable(ds, max_pixels, forced=instance is not None)
        if reason is not None:
            skipped[sop_uid] = reason
            continue
        view = _view(ds)
        candidate = Candidate(
            study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID), sop_uid=sop_uid, view=view
        )
        key = (FRONTAL_VIEWS.index(view) if view in FRONTAL_VIEWS else len(FRONTAL_VIEWS),
               _int(ds.get("SeriesNumber")), _int(ds.get("InstanceNumber")), sop_uid)
        ranked.append((key, candidate))
    if ranked:
        return Selection(candidates=[c for _, c in sorted(ranked, key=lambda pair: pair[0])], skipped=skipped)
    if instance is not None and not skipped:
        raise NoFrontalImageError("the study has no instance with the requested SOP Instance UID")
    raise NoFrontalImageError(_summary(len(instances), skipped, forced=instance is not None))


def _unusable(ds: Dataset, max_pixels: int, *, forced: bool) -> str | None:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class == DigitalXRayImageStorageForProcessing:
        return "a DX 'for processing' image (raw detector data, not for display)"
    if sop_class not in RADIOGRAPH_CLASSES:
        modality = str(ds.get("Modality", "") or "").strip() or "unknown modality"
        return f"not a projection radiograph ({modality} object)"
    if not all(k in ds for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
        return "the PACS did not return its UIDs"
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    frames = max(1, _int(ds.get("NumberOfFrames")))
    if rows * cols > max_pixels or frames > 1 and rows * cols * frames > 4 * max_pixels:
        return f"too large ({cols} x {rows} pixels x {frames} frames)"
    if forced:
        return None
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and not any(word in body_part for word in CHEST_WORDS):
        return "not a chest image (body part examined)"
    view = _view(ds)
    if not view:
        return "no view position recorded (choose it explicitly if it is frontal)"
    if view not in FRONTAL_VIEWS:
        return "lateral view" if view in ("LL", "RL", "LAT", "LATERAL") else "not a frontal view"
    return None


def _view(ds: Dataset) -> str:
    return str(ds.get("ViewPosition", "") or "").strip().upper()


def _int(value) -> int:
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def _summary(n_instances: int, skipped: dict[str, str], *, forced: bool) -> str:
    counts = Counter(skipped.values())
    reasons = "; ".join(f"{n} x {reason}" for reason, n in counts.most_common())
    if forced:
        return f"the requested instance cannot be reported: {reasons}"
    return (
        f"none of the study's {n_instances} instance(s) is a usable frontal chest radiograph ({reasons}); "
        "choose an instance explicitly if one of them is frontal"
    )
