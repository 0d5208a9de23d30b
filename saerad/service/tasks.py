"""The work behind the job endpoints: localised reports and interventions, as JobOutputs.

Each function runs in a job thread with the decoded X-ray held in memory, and turns the diffusion
stage's results into what the job store keeps: a JSON result whose image references are links to
``/v1/jobs/{id}/...png`` and the PNG bytes as artifacts. Heatmaps come back from the diffusion stage
as a PNG path or a ``data:`` URI; both are read into the store so the result outlives temp files.

:data:`KINDS` names every image job; :func:`job_input` and :func:`restore_xray` turn a job's image
into what the store keeps for a restart and back (``saerad.service.state.resume_job``). The stored pixels are the decoded image in 8 bits, as a PNG: the
encoder quantises to 8 bits itself, so a resumed job's report is the one it would have been; for
deeper files the diffusion model's input moves by at most 1/510. The uploaded file is never kept;
a DICOM source's header (without pixel data) is kept only for outputs that must reference its
study and patient (FHIR transaction Bundle, DICOM SR), which then carry that data anyway.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from saerad.errors import SaeradError
from saerad.service.jobs import Artifact, JobFn, JobInput, JobOutput

if TYPE_CHECKING:
    from saerad.imaging import XRay
    from saerad.pipeline import Reporter

log = logging.getLogger("saerad.service.tasks")

#: A PACS study report (saerad.service.studies): its input is its options alone, as the study's
#: images are pulled from the PACS again.
STUDY_REPORT = "study_report"


#: Output formats that reference the source image's study and patient (from its DICOM header).
FORMATS_NEEDING_SOURCE = frozenset({"fhir-bundle", "dicom-sr"})


def job_input(xray: XRay, params: dict[str, Any]) -> JobInput:
    """The X-ray's pixels (8-bit PNG), the job's options and, where the output needs it, the DICOM
    header, for the job store."""
    import io

    from PIL import Image

    from saerad.encoders.preprocess import quantize_8bit

    buf = io.BytesIO()
    Image.fromarray(quantize_8bit(xray.pixels)).save(buf, format="PNG", compress_level=1)
    meta: dict[str, Any] = {"original_size": list(xray.original_size), "source_format": xray.source_format}
    if xray.dicom is not None and params.get("fmt") in FORMATS_NEEDING_SOURCE:
        import pydicom

        header = io.BytesIO()
        pydicom.dcmwrite(header, xray.dicom)
        meta["dicom_header"] = base64.b64encode(header.getvalue()).decode("ascii")
    return JobInput(params={"options": params, "image": meta}, data=buf.getvalue())


def restore_xray(stored: JobInput) -> XRay:
    """The X-ray :func:`job_input` stored (pixels through :func:`saerad.imaging.load_xray`)."""
    import io

    from saerad.imaging import XRay, load_xray

    meta = stored.params["image"]
    pixels = load_xray(stored.data).pixels
    header = None
    if meta.get("dicom_header"):
        import pydicom

        header = pydicom.dcmread(io.BytesIO(base64.b64decode(meta["dicom_header"])), force=True)
    return XRay(pixels=pixels, original_size=tuple(meta["original_size"]), source_format=str(meta["source_format"]),
                dicom=header)


def job_fn(reporter: Reporter, kind: str, xray: XRay, options: dict[str, Any]) -> JobFn:
    """The work of a ``kind`` job on ``xray``, as the runner calls it (with the job id)."""
    if kind not in KINDS:
        raise SaeradError(f"unknown job kind {kind!r}", code="interrupted")
    task = KINDS[kind]
    return lambda jid: task(jid, reporter, xray, **options)


def job_link(job_id: str, name: str) -> str:
    return f"/v1/jobs/{job_id}/{name}.png"


def heatmap_bytes(ref: Any) -> bytes | None:
    """A heatmap (or any picture) as PNG bytes from a data URI, a file path, raw bytes, an array or a PIL image."""
    from PIL import Image

    from saerad.heatmaps.pictures import png_bytes

    if ref is None:
        return None
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    if isinstance(ref, (np.ndarray, Image.Image)):
        return png_bytes(ref)
    text = str(ref)
    if text.startswith("data:"):
        _, _, payload = text.partition(",")
        return base64.b64decode(payload)
    path = Path(text)
    if path.is_file():
        return path.read_bytes()
    raise SaeradError("the localisation produced a heatmap reference that cannot be read", code="bad_heatmap")


def localized_report(job_id: str, reporter: Reporter, xray: XRay, *, top_k: int | None, threshold: float | None,
                     method: str, steps: int, fmt: str, overlays: bool = False) -> JobOutput:
    """Report with per-sentence boxes and heatmaps (``method``: attribution or counterfactual); the
    heatmap PNGs (and, with ``overlays``, pictures of them over the X-ray) are stored as artifacts."""
    from saerad.heatmaps.pictures import overlay, read_heatmap

    t0 = time.perf_counter()
    report = reporter.report(xray, top_k=top_k, threshold=threshold, localize=method, localize_steps=steps)
    artifacts: list[Artifact] = []
    links: list[str] = []
    overlay_links: list[str] = []
    for k, sentence in enumerate(report.findings):
        data = heatmap_bytes(sentence.heatmap)
        if data is None:
            continue
        artifacts.append(Artifact(name=f"heatmaps/{k}", data=data))
        sentence.heatmap = job_link(job_id, f"heatmaps/{k}")
        links.append(sentence.heatmap)
        if overlays:
            boxes = [b.model_dump() for b in sentence.boxes or []]
            picture = overlay(xray.pixels, read_heatmap(data), boxes, max_side=512, scale=1.0)
            artifacts.append(Artifact(name=f"overlays/{k}", data=heatmap_bytes(picture)))
            overlay_links.append(job_link(job_id, f"overlays/{k}"))
    report.timings_ms["job_total"] = round((time.perf_counter() - t0) * 1000.0, 1)
    result: dict[str, Any] = {"report": report.model_dump(mode="json"), "heatmaps": links}
    if overlays:
        result["overlays"] = overlay_links
    if fmt == "text":
        result["text"] = report.text()
    elif fmt == "fhir":
        from saerad.report.fhir import to_fhir

        result["fhir"] = to_fhir(report, report_id=job_id)
    elif fmt == "fhir-bundle":
        from saerad.report.fhir import to_fhir_transaction

        result["fhir"] = to_fhir_transaction([report], [xray.dicom])
    elif fmt == "dicom-sr":
        artifacts.append(sr_artifact(report, xray))
        result["sr_file"] = sr_link(job_id)
    return JobOutput(result=result, artifacts=artifacts)


def sr_link(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/sr.dcm"


def sr_artifact(report, xray: XRay, sr=None) -> Artifact:
    """The report's DICOM SR as the job artifact ``sr`` (served at :func:`sr_link`)."""
    from saerad.report.dicom_sr import sr_bytes, to_dicom_sr

    sr = sr if sr is not None else to_dicom_sr(report, xray.dicom, source_format=xray.source_format)
    return Artifact(name="sr", data=sr_bytes(sr), media_type="application/dicom")


def intervention(job_id: str, reporter: Reporter, xray: XRay, *, features: list[int], mode: str,
                 strength: float, steps: int) -> JobOutput:
    """Original, reconstruction, one counterfactual + map overlay + boxes per feature, and metrics."""
    from saerad.diffusion.intervene import run_intervention
    from saerad.diffusion.maps import display_scale
    from saerad.heatmaps.pictures import overlay

    t0 = time.perf_counter()
    res = run_intervention(xray, features, mode=mode, strength=strength, bundle=reporter.bundle,
                           encoder=reporter.encoder, steps=steps, device=reporter.device)
    artifacts: list[Artifact] = []

    def store(name: str, image: Any) -> str:
        artifacts.append(Artifact(name=name, data=heatmap_bytes(image) or b""))
        return job_link(job_id, name)

    edits = []
    for k, feature_id in enumerate(features):
        try:
            description = reporter.bundle.dictionary.get(feature_id).description
        except (KeyError, SaeradError):
            description = None
        picture = overlay(xray.pixels, res.heatmaps[k], res.boxes[k], max_side=512, scale=display_scale(res.heatmaps[k]))
        edits.append({
            "feature": feature_id,
            "description": description,
            "activation": _jsonable(res.activations.get(feature_id)),
            "counterfactual": store(f"images/counterfactual-{k}", res.counterfactuals[k]),
            "heatmap": store(f"heatmaps/{k}", picture),
            "boxes": _jsonable(res.boxes[k]),
        })
    result = {
        "mode": mode,
        "strength": strength,
        "steps": steps,
        "images": {
            "original": store("images/original", res.original),
            "reconstruction": store("images/reconstruction", res.reconstruction),
        },
        "edits": edits,
        "metrics": _jsonable(res.metrics),
        "timings_ms": {"job_total": round((time.perf_counter() - t0) * 1000.0, 1)},
        "research_use_only": True,
    }
    return JobOutput(result=result, artifacts=artifacts)


KINDS: dict[str, Callable[..., JobOutput]] = {"localized_report": localized_report, "intervention": intervention}


def _jsonable(value: Any) -> Any:
    """Boxes/metrics as plain JSON (numpy scalars, pydantic models, dataclasses, tuples)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
