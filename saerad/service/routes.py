"""HTTP routes of the service (``/v1``, ``/healthz``, ``/readyz``).

Handlers stay thin: validate options, decode the upload off the event loop, run the model in the
inference pool (``ServiceState.run_inference``) or hand the work to the job runner, and format the
reply. Options are query parameters and the image is the ``file`` part of a multipart body, for both
reports and interventions, so a client builds every request the same way.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from saerad.errors import ConfigError, ImageDecodeError, SaeradError
from saerad.report.schema import GroundedReport
from saerad.report.select import THRESHOLD_MAX, TOP_K_MAX, check_selection_options
from saerad.service.errors import CapabilityError, NotFoundError, NotReadyError, error_responses
from saerad.service.models import (
    FeatureList,
    Health,
    InterventionMode,
    JobAccepted,
    JobLinks,
    JobStatus,
    LocalizeOption,
    Readiness,
    ReportFormat,
)

if TYPE_CHECKING:
    from saerad.imaging import XRay
    from saerad.service.state import ServiceState

router = APIRouter()

FHIR_MEDIA_TYPE = "application/fhir+json"
DICOM_MEDIA_TYPE = "application/dicom"
UploadField = Annotated[
    UploadFile, File(description="One chest X-ray: PNG, JPEG or DICOM (format sniffed from the bytes).")
]
_JOB_ID = Annotated[str, Path(min_length=1, max_length=64, description="Job id from a 202 reply.")]


def _state(request: Request) -> ServiceState:
    return request.app.state.saerad


async def _decode(state: ServiceState, upload: UploadFile) -> tuple[XRay, float]:
    """Read the (size-limited) upload and decode it off the event loop; returns (xray, ms)."""
    from saerad.imaging import load_xray

    data = await upload.read()
    await upload.close()
    if not data:
        raise ImageDecodeError("the uploaded file is empty (0 bytes)", code="empty_file")
    t0 = time.perf_counter()
    kwargs = {} if state.settings.max_image_pixels is None else {"max_pixels": state.settings.max_image_pixels}
    xray = await run_in_threadpool(load_xray, data, **kwargs)
    return xray, (time.perf_counter() - t0) * 1000.0


def _require_diffusion(state: ServiceState, what: str) -> None:
    if not state.has_diffusion:
        raise CapabilityError(
            f"{what} needs a diffusion model, and the loaded bundle has none; "
            "serve a bundle built with `saerad train-diffusion`",
            code="no_diffusion_model",
        )


def _accepted(job_id: str, kind: str) -> JSONResponse:
    link = f"/v1/jobs/{job_id}"
    body = JobAccepted(job_id=job_id, kind=kind, links=JobLinks(self=link))
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": link})


OOD_HEADER = "Saerad-Out-Of-Distribution"


def _format_report(report: GroundedReport, fmt: ReportFormat, request: Request, xray: XRay) -> Response:
    # The flag travels as a header in every format (the JSON also has it in out_of_distribution).
    ood = report.out_of_distribution
    headers = {} if ood is None else {OOD_HEADER: "true" if ood.flagged else "false"}
    if fmt is ReportFormat.text:
        return PlainTextResponse(report.text() + "\n", headers=headers)
    if fmt is ReportFormat.fhir:
        from saerad.report.fhir import to_fhir

        report_id = str(request.scope.get("state", {}).get("request_id", "saerad-report"))
        return JSONResponse(to_fhir(report, report_id=report_id[:64]), media_type=FHIR_MEDIA_TYPE, headers=headers)
    if fmt is ReportFormat.fhir_bundle:
        from saerad.report.fhir import to_fhir_transaction

        return JSONResponse(to_fhir_transaction([report], [xray.dicom]), media_type=FHIR_MEDIA_TYPE, headers=headers)
    if fmt is ReportFormat.dicom_sr:
        from saerad.report.dicom_sr import sr_bytes, to_dicom_sr

        sr = to_dicom_sr(report, xray.dicom, source_format=xray.source_format)
        return Response(sr_bytes(sr), media_type=DICOM_MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{sr.SOPInstanceUID}.dcm"', **headers})
    return JSONResponse(report.model_dump(mode="json"), headers=headers)


# --------------------------------------------------------------------------------------- reports


@router.post(
    "/v1/reports",
    summary="Grounded findings report of one chest X-ray",
    responses={
        200: {
            "description": "The report (json: GroundedReport; text: findings paragraph; fhir: DiagnosticReport; "
            "fhir-bundle: transaction Bundle; dicom-sr: Comprehensive 3D SR file). When the bundle has an "
            "out-of-distribution check, header Saerad-Out-Of-Distribution is true or false, and a flagged "
            "report starts with a warning.",
            "content": {
                "application/json": {"schema": GroundedReport.model_json_schema(ref_template="#/components/schemas/{model}")},
                "text/plain": {"schema": {"type": "string"}},
                FHIR_MEDIA_TYPE: {"schema": {"type": "object"}},
                DICOM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        202: {"model": JobAccepted, "description": "localize: a job was queued; poll its link."},
        **error_responses(400, 401, 408, 409, 413, 415, 422, 429),
    },
    response_class=Response,
)
async def create_report(
    request: Request,
    file: UploadField,
    format: Annotated[ReportFormat, Query(description="json | text | fhir | fhir-bundle | dicom-sr")] = ReportFormat.json,
    localize: Annotated[LocalizeOption, Query(
        description="Boxes and a heatmap per sentence, by attribution or counterfactual (true: the service's "
                    "default method); becomes a job (202).")] = LocalizeOption.false,
    overlays: Annotated[bool, Query(description="With localize: also store each heatmap over the X-ray.")] = False,
    top_k: Annotated[int | None, Query(ge=0, le=TOP_K_MAX, description="At most this many features write findings.")] = None,
    threshold: Annotated[
        float | None,
        Query(ge=0.0, le=THRESHOLD_MAX, allow_inf_nan=False, description="Activation above which a feature is active."),
    ] = None,
) -> Response:
    state = _state(request)
    check_selection_options(top_k, threshold)  # what the library checks; before the upload is read
    method = localize.method(state.settings.localize_method)
    if method is not None:
        if method == "counterfactual":
            _require_diffusion(state, "counterfactual localisation")
        state.runner.check_capacity()  # 429 before spending time on the upload
    xray, decode_ms = await _decode(state, file)
    if method is not None:
        options = {"top_k": top_k, "threshold": threshold, "method": method, "steps": state.settings.localize_steps,
                   "fmt": format.value, "overlays": overlays}
        job_id = await run_in_threadpool(state.submit_job, "localized_report", options, xray)
        return _accepted(job_id, "localized_report")
    report = await state.run_inference(state.reporter.report, xray, top_k=top_k, threshold=threshold)
    report.timings_ms["decode"] = round(decode_ms, 2)
    # Building a DICOM SR takes ~0.1 s of CPU: off the event loop, like the model.
    return await run_in_threadpool(_format_report, report, format, request, xray)


# ----------------------------------------------------------------------------------- interventions


@router.post(
    "/v1/interventions",
    summary="Counterfactual images of adding or removing SAE features (a job)",
    status_code=202,
    response_model=JobAccepted,
    responses=error_responses(400, 401, 408, 409, 413, 415, 422, 429),
)
async def create_intervention(
    request: Request,
    file: UploadField,
    feature: Annotated[list[int], Query(min_length=1, max_length=16, description="Feature id(s); repeat.")],
    mode: Annotated[InterventionMode, Query(description="add | remove")] = InterventionMode.remove,
    strength: Annotated[float, Query(gt=0.0, le=10.0, allow_inf_nan=False)] = 1.0,
    steps: Annotated[int | None, Query(ge=1, le=1000, description="DDIM steps (default from settings).")] = None,
) -> Response:
    state = _state(request)
    _require_diffusion(state, "an intervention")
    unknown = sorted({f for f in feature if not 0 <= f < state.n_features})
    if unknown:
        raise ConfigError(
            f"unknown feature id(s) {unknown[:10]}: this bundle has features 0..{state.n_features - 1}",
            code="unknown_feature",
        )
    n_steps = steps or state.settings.intervention_steps
    if n_steps > state.settings.max_intervention_steps:
        raise ConfigError(f"steps must be <= {state.settings.max_intervention_steps}", code="invalid_options")
    state.runner.check_capacity()
    xray, _ = await _decode(state, file)
    options = {"features": list(dict.fromkeys(feature)), "mode": mode.value, "strength": strength, "steps": n_steps}
    job_id = await run_in_threadpool(state.submit_job, "intervention", options, xray)
    return _accepted(job_id, "intervention")


# -------------------------------------------------------------------------------------------- jobs


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@router.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=error_responses(401, 404, 422))
async def get_job(request: Request, job_id: _JOB_ID) -> Any:
    record = await run_in_threadpool(_state(request).store.get, job_id)
    if record is None:
        raise NotFoundError(f"no job with id {job_id[:64]!r} (unknown or expired)")
    return JobStatus(
        job_id=record.id,
        kind=record.kind,
        state=record.state,
        created_at=_iso(record.created_at),
        started_at=_iso(record.started_at),
        finished_at=_iso(record.finished_at),
        result=record.result,
        error=record.error,
        links=JobLinks(self=f"/v1/jobs/{record.id}"),
    )


async def _artifact(request: Request, job_id: str, name: str) -> Response:
    art = await run_in_threadpool(_state(request).store.artifact, job_id, name)
    if art is None:
        raise NotFoundError(f"job {job_id[:64]!r} has no {name}.png (unknown job, not finished, or expired)")
    return Response(art.data, media_type=art.media_type, headers={"Cache-Control": "private, max-age=3600"})


_PNG = {200: {"content": {"image/png": {}}, "description": "PNG image"}, **error_responses(401, 404, 422)}


@router.get("/v1/jobs/{job_id}/heatmaps/{n}.png", response_class=Response, responses=_PNG)
async def get_heatmap(request: Request, job_id: _JOB_ID, n: Annotated[int, Path(ge=0, le=10_000)]) -> Response:
    return await _artifact(request, job_id, f"heatmaps/{n}")


@router.get("/v1/jobs/{job_id}/overlays/{n}.png", response_class=Response, responses=_PNG)
async def get_overlay(request: Request, job_id: _JOB_ID, n: Annotated[int, Path(ge=0, le=10_000)]) -> Response:
    """Sentence ``n``'s heatmap drawn over the X-ray (a localised report asked with overlays=true)."""
    return await _artifact(request, job_id, f"overlays/{n}")


@router.get("/v1/jobs/{job_id}/images/{name}.png", response_class=Response, responses=_PNG)
async def get_job_image(
    request: Request,
    job_id: _JOB_ID,
    name: Annotated[str, Path(pattern=r"^(original|reconstruction|counterfactual-\d{1,3})$")],
) -> Response:
    return await _artifact(request, job_id, f"images/{name}")


# ---------------------------------------------------------------------------------------- features


def _feature_json(stats: Any) -> dict[str, Any]:
    return stats.model_dump(mode="json") if hasattr(stats, "model_dump") else dict(stats)


@router.get("/v1/features/{feature_id}", responses=error_responses(401, 404, 422))
async def get_feature(request: Request, feature_id: Annotated[int, Path(ge=0, le=2**31)]) -> dict[str, Any]:
    state = _state(request)
    if not 0 <= feature_id < state.n_features:
        raise NotFoundError(f"no feature {feature_id}: this bundle has features 0..{state.n_features - 1}")
    try:
        stats = state.dictionary.get(feature_id)
    except (KeyError, IndexError, SaeradError) as exc:
        raise NotFoundError(f"no feature {feature_id} in this bundle's dictionary") from exc
    return _feature_json(stats)


@router.get("/v1/features", response_model=FeatureList, responses=error_responses(401, 422))
async def list_features(
    request: Request,
    query: Annotated[str | None, Query(max_length=200, description="Text search over descriptions.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Without a query: page start.")] = 0,
) -> FeatureList:
    state = _state(request)
    if query is not None and query.strip():
        hits = await run_in_threadpool(state.dictionary.search, query, limit)
        return FeatureList(features=[_feature_json(h) for h in hits], total=len(hits), query=query)
    feats = state.dictionary.features
    return FeatureList(features=[_feature_json(f) for f in feats[offset : offset + limit]], total=len(feats))


# ------------------------------------------------------------------------------------------ health


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Bundle loaded and warmed up", responses=error_responses(503))
async def readyz(request: Request) -> Readiness:
    state = _state(request)
    if not state.ready.is_set():
        raise NotReadyError("warming up", headers={"Retry-After": "2"})
    return Readiness(
        bundle=state.bundle_info,
        diffusion=state.has_diffusion,
        jobs={"waiting": state.runner.waiting, "running": state.runner.running},
    )
