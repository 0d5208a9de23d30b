"""Report a study that lives in a PACS: find its frontal image, pull it, report it, store the SR back.

Shared by ``saerad pacs report`` and the service's ``POST /v1/studies/{uid}/report`` job so both do
the same thing. Candidates are pulled best first until one decodes; the SR joins the study and
references the image that was reported.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saerad.errors import ConfigError, ImageDecodeError
from saerad.imaging import DEFAULT_MAX_PIXELS, load_xray
from saerad.pacs.errors import NoFrontalImageError
from saerad.pacs.select import Candidate, select_frontal
from saerad.report.dicom_sr import to_dicom_sr

if TYPE_CHECKING:
    from pydicom import Dataset

    from saerad.imaging import XRay
    from saerad.pacs.client import PacsClient, StoredInstance
    from saerad.pipeline import Reporter
    from saerad.report.schema import GroundedReport


@dataclass
class StudyReport:
    """The outcome of reporting one PACS study."""

    report: GroundedReport
    image: Candidate
    xray: XRay = field(repr=False)
    sr: Dataset = field(repr=False)
    stored: StoredInstance | None
    skipped: dict[str, str]
    timings_ms: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """JSON-able description: which image was reported, where the SR is, what was skipped and why."""
        return {
            "study_instance_uid": self.image.study_uid,
            "image": {"series_instance_uid": self.image.series_uid, "sop_instance_uid": self.image.sop_uid,
                      "view_position": self.image.view},
            "sr": {
                "series_instance_uid": str(self.sr.SeriesInstanceUID),
                "sop_instance_uid": str(self.sr.SOPInstanceUID),
                "stored": self.stored is not None,
                "retrieve_url": self.stored.retrieve_url if self.stored else None,
            },
            "skipped": [{"sop_instance_uid": uid, "reason": why} for uid, why in self.skipped.items()],
            "timings_ms": self.timings_ms,
        }


#: A DICOM UID (PS3.5 9.1): dot-separated numbers without leading zeros, at most 64 characters.
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"


def check_uid(uid: str, what: str = "Study Instance UID") -> str:
    """``uid`` if it is a DICOM UID, else :class:`ConfigError` (checked before it goes into a URL)."""
    uid = uid.strip()
    if len(uid) > 64 or not re.match(UID_PATTERN, uid):
        raise ConfigError(f"{what} must be a DICOM UID (digits and dots, at most 64 characters)", code="invalid_uid")
    return uid


def report_study(
    reporter: Reporter,
    client: PacsClient,
    study_uid: str,
    *,
    instance: str | None = None,
    store: bool = False,
    localize: bool | str | None = None,
    localize_steps: int | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> StudyReport:
    """Search, pull, report and (with ``store``) store the SR; raises SaeradError subclasses only.

    ``localize`` is :meth:`saerad.pipeline.Reporter.report`'s (``"attribution"``, ``"counterfactual"``).
    """
    study_uid = check_uid(study_uid)
    if instance is not None:
        instance = check_uid(instance, "SOP Instance UID")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    instances = client.search_instances(study_uid)
    selection = select_frontal(instances, max_pixels=max_pixels, instance=instance)
    timings["search"] = _ms(t0)
    skipped = dict(selection.skipped)
    t = time.perf_counter()
    chosen, xray = _pull_first_decodable(client, selection.candidates, skipped, max_pixels)
    timings["retrieve"] = _ms(t)
    t = time.perf_counter()
    report = reporter.report(xray, top_k=top_k, threshold=threshold, localize=localize, localize_steps=localize_steps)
    timings["report"] = _ms(t)
    t = time.perf_counter()
    sr = to_dicom_sr(report, xray.dicom, source_format=xray.source_format)
    timings["sr"] = _ms(t)
    stored = None
    if store:
        t = time.perf_counter()
        stored = client.store(sr)
        timings["store"] = _ms(t)
    timings["total"] = _ms(t0)
    return StudyReport(report=report, image=chosen, xray=xray, sr=sr, stored=stored, skipped=skipped,
                       timings_ms={k: round(v, 1) for k, v in timings.items()})


def _pull_first_decodable(client: PacsClient, candidates: list[Candidate], skipped: dict[str, str],
                          max_pixels: int) -> tuple[Candidate, XRay]:
    for candidate in candidates:
        data = client.retrieve(candidate.study_uid, candidate.series_uid, candidate.sop_uid)
        try:
            xray = load_xray(data, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            skipped[candidate.sop_uid] = f"its pixel data cannot be decoded ({exc.code})"
            continue
        if xray.dicom is None or str(xray.dicom.get("SOPInstanceUID", "")) != candidate.sop_uid:
            skipped[candidate.sop_uid] = "the PACS returned a different instance than requested"
            continue
        return candidate, xray
    reasons = "; ".join(sorted(set(skipped.values())))
    raise NoFrontalImageError(f"no frontal image of the study could be used ({reasons})")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
