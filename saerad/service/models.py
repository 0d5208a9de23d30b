"""Response bodies of the service that are not library types (jobs, health, feature lists).

The grounded report itself is :class:`saerad.report.schema.GroundedReport`; these models only exist
so the OpenAPI document describes every reply a client can get.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field


class ReportFormat(str, Enum):
    json = "json"
    text = "text"
    fhir = "fhir"
    fhir_bundle = "fhir-bundle"
    dicom_sr = "dicom-sr"


class LocalizeOption(str, Enum):
    """``attribution`` (the encoder's own sensitivity, seconds) or ``counterfactual`` (the diffusion
    model, slower); ``true`` = the service's default method (``SAERAD_LOCALIZE_METHOD``); ``false``: none."""

    false = "false"
    true = "true"
    attribution = "attribution"
    counterfactual = "counterfactual"

    def method(self, default: str) -> str | None:
        """The localisation method asked for (``default`` for ``true``), None for ``false``."""
        return {"false": None, "true": default}.get(self.value, self.value)


class InterventionMode(str, Enum):
    add = "add"
    remove = "remove"


class JobLinks(BaseModel):
    self: str


class JobAccepted(BaseModel):
    """The reply to a request that became a job (HTTP 202); poll ``links.self``."""

    job_id: str
    kind: str
    state: Literal["queued"] = "queued"
    links: JobLinks


class JobError(BaseModel):
    code: str
    message: str


class JobStatus(BaseModel):
    job_id: str
    kind: str
    state: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = Field(
        None, description="Kind-specific result when done; image references are links under this job."
    )
    error: JobError | None = None
    links: JobLinks


class FeatureList(BaseModel):
    features: list[dict[str, Any]]
    total: int = Field(description="Features matching (for a query: returned; without: in the dictionary).")
    query: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    bundle: dict[str, Any]
    diffusion: bool
    jobs: dict[str, int]
