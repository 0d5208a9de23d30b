"""Routes for studies in the configured PACS: ``POST /v1/studies/{uid}/report`` (a job) and the job's SR.

A study report pulls images over the network and may localise, so it is a job like localisation: the
POST answers 202 with a job link, and the job's result says which image was reported, whether the SR
was stored, and why other instances were skipped. The SR itself is the job artifact
``/v1/jobs/{id}/sr.dcm`` whether or not it was stored. A PACS failure or a study without a usable
frontal image fails the job with its code (``pacs_unreachable``, ``no_frontal_image``, ...): the
request was valid, so it never becomes a 5xx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from saerad.pacs.study import UID_PATTERN
from saerad.report.select import THRESHOLD_MAX, TOP_K_MAX, check_selection_options
from saerad.service.errors import CapabilityError, NotFoundError, error_responses
from saerad.service.jobs import JobOutput
from saerad.service.models import JobAccepted, JobLinks, LocalizeOption
from saerad.service.tasks import STUDY_REPORT, sr_artifact, sr_link

if TYPE_CHECKING:
    from saerad.pacs.client import PacsClient
    from saerad.pipeline import Reporter

router = APIRouter()

_UID = Annotated[str, Path(min_length=1, max_length=64, pattern=UID_PATTERN, description="Study Instance UID.")]


@router.post(
    "/v1/studies/{study_uid}/report",
    summary="Report a study of the configured PACS and optionally store the DICOM SR back (a job)",
    status_code=202,
    response_model=JobAccepted,
    responses=error_responses(401, 409, 422, 429),
)
async def report_study(
    request: Request,
    study_uid: _UID,
    store: Annotated[bool, Query(description="Store the SR into the study (STOW-RS).")] = False,
    instance: Annotated[
        str | None,
        Query(max_length=64, pattern=UID_PATTERN, description="Report this SOP Instance UID (no view check)."),
    ] = None,
    format: Annotated[Literal["json", "fhir-bundle"], Query(description="json, or also a FHIR transaction Bundle.")] = "json",
    localize: Annotated[LocalizeOption, Query(
        description="Boxes (SCOORD regions) by attribution or counterfactual (true: the service's default method)."
    )] = LocalizeOption.false,
    top_k: Annotated[int | None, Query(ge=0, le=TOP_K_MAX)] = None,
    threshold: Annotated[float | None, Query(ge=0.0, le=THRESHOLD_MAX, allow_inf_nan=False)] = None,
) -> Response:
    state = request.app.state.saerad
    check_selection_options(top_k, threshold)
    if state.settings.pacs.url is None:
        raise CapabilityError("this service has no PACS configured (SAERAD_PACS_URL)", code="no_pacs_configured")
    method = localize.method(state.settings.localize_method)
    if method == "counterfactual" and not state.has_diffusion:
        raise CapabilityError("counterfactual localisation needs a bundle with a diffusion model",
                              code="no_diffusion_model")
    state.runner.check_capacity()
    options = {"study_uid": study_uid, "instance": instance, "store": store, "fmt": format, "localize": method,
               "localize_steps": state.settings.localize_steps, "top_k": top_k, "threshold": threshold,
               "max_pixels": state.settings.max_image_pixels}
    job_id = await run_in_threadpool(state.submit_job, STUDY_REPORT, options)  # a restart runs it again
    link = f"/v1/jobs/{job_id}"
    body = JobAccepted(job_id=job_id, kind="study_report", links=JobLinks(self=link))
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": link})


@router.get(
    "/v1/jobs/{job_id}/sr.dcm",
    summary="The DICOM SR of a finished job (study reports; reports with format=dicom-sr)",
    response_class=Response,
    responses={200: {"content": {"application/dicom": {}}, "description": "DICOM Part 10 file"},
               **error_responses(401, 404, 422)},
)
async def get_job_sr(
    request: Request, job_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> Response:
    art = await run_in_threadpool(request.app.state.saerad.store.artifact, job_id, "sr")
    if art is None:
        raise NotFoundError(f"job {job_id[:64]!r} has no DICOM SR (unknown job, not finished, or expired)")
    return Response(art.data, media_type=art.media_type,
                    headers={"Content-Disposition": 'attachment; filename="report.sr.dcm"'})


def study_job(job_id: str, reporter: Reporter, client: PacsClient, study_uid: str, *, instance: str | None,
              store: bool, fmt: str, localize: str | None, localize_steps: int, top_k: int | None,
              threshold: float | None, max_pixels: int | None) -> JobOutput:
    """The job: :func:`saerad.pacs.study.report_study`, with the SR kept as the job's artifact."""
    from saerad.pacs.study import report_study as run

    kwargs: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    outcome = run(reporter, client, study_uid, instance=instance, store=store, localize=localize,
                  localize_steps=localize_steps, top_k=top_k, threshold=threshold, **kwargs)
    result: dict[str, Any] = {
        **outcome.summary(),
        "report": outcome.report.model_dump(mode="json"),
        "sr_file": sr_link(job_id),
        "research_use_only": True,
    }
    if fmt == "fhir-bundle":
        from saerad.report.fhir import to_fhir_transaction

        result["fhir"] = to_fhir_transaction([outcome.report], [outcome.xray.dicom])
    return JobOutput(result=result, artifacts=[sr_artifact(outcome.report, outcome.xray, outcome.sr)])
