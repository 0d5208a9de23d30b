"""The FastAPI application: ``create_app(settings)``, for uvicorn and for tests.

The Reporter (encoder + SAE + dictionary, and the diffusion model when the bundle has one) is loaded
once per process in the lifespan, then warmed up in the background: ``/healthz`` answers as soon as
the process serves, ``/readyz`` only after the first synthetic image went through the model, so a
load balancer never sends traffic to a replica that would answer its first request slowly.

Inference runs in a dedicated pool of ``inference_threads`` threads, never on the event loop, and
torch gets cores / (workers x inference_threads) threads per op, so concurrent requests run side by
side instead of fighting over the same cores. Micro-batching concurrent requests was measured and not
adopted (docs/deployment.md): with one torch thread, the default encoder costs ~92 ms CPU per image
alone and ~77 ms in a batch of 8, at most ~15-20% more throughput at saturation, nothing when idle,
for a batching queue that adds waiting time to every request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

import saerad
from saerad.service.errors import install_error_handlers
from saerad.service.jobs import JobRunner, JobStore
from saerad.service.logs import configure_logging
from saerad.service.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from saerad.service.routes import router
from saerad.service.settings import ServiceSettings
from saerad.service.state import ServiceState, resume_job
from saerad.service.studies import router as studies_router

if TYPE_CHECKING:
    from saerad.pipeline import Reporter

log = logging.getLogger("saerad.service")

DESCRIPTION = (
    "Grounded chest X-ray findings from sparse-autoencoder features of a vision transformer's class "
    "token. **Research use only: not a medical device.** Upload one image as the `file` part of a "
    "multipart body; options are query parameters. Errors are `{\"error\": {\"code\", \"message\"}}`."
)


def return_large_frees_to_the_os() -> None:
    """Make glibc map large allocations on their own, so that freeing them gives the memory back.

    glibc's dynamic mmap threshold grows to 32 MB after the first large free; from then on, blocks of
    PIL images and full-size arrays come from the thread's heap and stay resident after they are
    freed: one 64-Mpx colour JPEG left ~280 MB behind in an inference thread (peak +550 MB instead of
    +310 MB, bench/bench_service_memory.py). A fixed 8 MB threshold keeps those separate; the trim
    threshold is raised to 64 MB so the many small allocations of inference do not pay for it
    (bench/bench_service_load.py run alternately on this and on code without it: the same
    throughput). Other C libraries: nothing to do.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 8 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def _load_reporter(settings: ServiceSettings) -> Reporter:
    from saerad.pipeline import Reporter

    t0 = time.perf_counter()
    reporter = Reporter.from_bundle(settings.bundle, device=settings.device)
    log.info("bundle loaded in %.1f s", time.perf_counter() - t0)
    return reporter


def create_app(settings: ServiceSettings | None = None, *, reporter: Reporter | None = None) -> FastAPI:
    """Build the app. ``reporter`` lets tests share one loaded model between app instances."""
    settings = settings or ServiceSettings()
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        return_large_frees_to_the_os()
        if reporter is None:  # an injected reporter (tests) shares its process: leave torch alone
            import torch

            torch.set_num_threads(settings.effective_torch_threads())
        loaded = reporter if reporter is not None else await run_in_threadpool(_load_reporter, settings)
        store = await run_in_threadpool(lambda: JobStore(settings.job_db, replica_id=settings.replica_id))
        runner = JobRunner(store, workers=settings.job_workers, queue_size=settings.queue_size,
                           ttl_s=settings.job_ttl_s, stale_s=settings.job_stale_s, resume=resume_job(loaded, settings))
        state = ServiceState(settings, loaded, store, runner)
        app.state.saerad = state
        threading.Thread(target=state.warm_up, name="saerad-warmup", daemon=True).start()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="saerad",
        version=saerad.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    if settings.atlas_dir is not None:
        from saerad.service.atlas import mount_atlas

        mount_atlas(app, settings.atlas_dir)
    app.include_router(studies_router)

    # add_middleware wraps the current stack, so the last one added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes,
                       idle_timeout_s=settings.upload_idle_timeout_s, total_timeout_s=settings.upload_timeout_s)
    key = settings.api_key_bytes()
    if key is not None:
        app.add_middleware(ApiKeyMiddleware, key=key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Location", "Retry-After", "Saerad-Out-Of-Distribution"],
        )
    app.add_middleware(RequestContextMiddleware)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``saerad.service.app:app_from_env``) used by ``saerad serve --workers N``."""
    return create_app(ServiceSettings())
