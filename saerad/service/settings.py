"""Service settings, read from ``SAERAD_*`` environment variables (pydantic-settings).

Everything an operator may need to change per deployment lives here, so the same container image runs
on a laptop and behind a load balancer; nothing is read from the environment anywhere else in the
service. The README and ``docs/deployment.md`` list the variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from saerad.pacs.settings import PacsSettings


class ServiceSettings(BaseSettings):
    """Settings of one service process. Field ``x`` is read from ``SAERAD_X``."""

    model_config = SettingsConfigDict(env_prefix="SAERAD_", extra="ignore", frozen=True)

    # --- model -------------------------------------------------------------------------------
    bundle: str | None = Field(None, description="Bundle directory; unset = the embedded default bundle.")
    device: str = Field(
        "auto", description="Torch device of the encoder, SAE and diffusion model: auto (cuda if available, else cpu), "
        "cpu, cuda or cuda:N."
    )
    warmup: bool = Field(True, description="Run synthetic images through the model before /readyz is ok.")

    # --- security ----------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="If set, every /v1 request needs header X-API-Key (or Authorization: Bearer)."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated allowed CORS origins; empty = CORS closed."
    )

    # --- input limits ------------------------------------------------------------------------
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Request bodies above this get 413.")
    max_image_pixels: int | None = Field(
        None, gt=0, description="Decoded images above this many pixels get 413; unset = imaging default."
    )
    upload_idle_timeout_s: float = Field(
        15.0, gt=0, description="A request body that sends nothing for this long gets 408 and its connection closed."
    )
    upload_timeout_s: float = Field(
        300.0, gt=0, description="A request body not complete after this long gets 408 (20 MB at 1 Mbit/s: 160 s)."
    )

    # --- concurrency -------------------------------------------------------------------------
    workers: int = Field(1, ge=1, description="uvicorn worker processes (saerad serve --workers).")
    inference_threads: int = Field(
        2,
        ge=1,
        description="Reports computed at once per process (each in its own thread).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads per process; unset = usable cores / (workers x inference_threads), "
        "at least 1, so concurrent reports never oversubscribe the CPU.",
    )
    job_workers: int = Field(1, ge=1, description="Localisation/intervention jobs run at once per process.")
    queue_size: int = Field(8, ge=0, description="Jobs waiting (not yet running) per process before 429.")

    # --- jobs --------------------------------------------------------------------------------
    job_db: Path = Field(Path("saerad-jobs.sqlite3"), description="SQLite file of job states and results.")
    job_ttl_s: float = Field(
        24 * 3600.0, gt=0, description="Finished jobs (and their images) are deleted after this long."
    )
    job_stale_s: float = Field(
        6 * 3600.0, gt=0, description="Unfinished jobs older than this are reported failed (their process died)."
    )
    job_keep_inputs: bool = Field(
        True,
        description="Keep an unfinished job's decoded pixels (8-bit PNG, never the uploaded file) in the job "
        "database until it ends, so a restart runs it again; false: memory only, and a restart fails it.",
    )
    replica_id: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,30}$",
        description="Names this replica: prefixes job ids (path-based routing of /v1/jobs) and tags its jobs.",
    )
    localize_method: Literal["attribution", "counterfactual"] = Field(
        "attribution", description="What localize=true means: encoder attribution or diffusion counterfactuals.")
    localize_steps: int = Field(50, ge=1, le=1000, description="DDIM steps of counterfactual localisation jobs.")
    intervention_steps: int = Field(50, ge=1, le=1000, description="Default DDIM steps of interventions.")
    max_intervention_steps: int = Field(200, ge=1, le=1000, description="Upper bound a client may ask for.")

    # --- feature atlas -----------------------------------------------------------------------
    atlas_dir: Path | None = Field(
        None, description="A folder written by `saerad atlas`, served read-only at /atlas/ (same API key as /v1)."
    )

    # --- PACS --------------------------------------------------------------------------------
    pacs: PacsSettings = Field(
        default_factory=PacsSettings,
        description="The DICOMweb PACS of POST /v1/studies/{uid}/report, read from SAERAD_PACS_* (docs/deployment.md).",
    )

    # --- logging -----------------------------------------------------------------------------
    log_level: str = Field("INFO", description="Level of the JSON logs.")
    log_json: bool = Field(True, description="One JSON object per log line (false: plain text).")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # A comma-separated env var is friendlier than JSON for a list of URLs.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    def effective_torch_threads(self) -> int:
        """Threads per torch op: the cores this process may use, shared by its concurrent reports.

        Measured on 2 shared cores (bench/bench_service_load.py): torch's default of one thread per
        core made each report 5-13x slower as soon as other processes competed for the cores (its
        worker threads wait on each other at every op), while one thread per concurrent report kept
        throughput steady.
        """
        if self.torch_threads is not None:
            return self.torch_threads
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, cores // (self.workers * self.inference_threads))

    def api_key_bytes(self) -> bytes | None:
        """The key as bytes for :func:`hmac.compare_digest`; ``None`` when auth is off."""
        if self.api_key is None or not self.api_key.get_secret_value():
            return None
        return self.api_key.get_secret_value().encode("utf-8")
