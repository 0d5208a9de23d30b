"""What every request handler shares, built once per process in the app's lifespan.

Its own module so that the routes (which read it) and the app (which builds it) do not import
each other.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from saerad.service.jobs import JobFn, JobInput, JobRunner, JobStore, ResumeFn
from saerad.service.settings import ServiceSettings

if TYPE_CHECKING:
    from saerad.imaging import XRay
    from saerad.pipeline import Reporter

log = logging.getLogger("saerad.service")
T = TypeVar("T")

def job_work(reporter: Reporter, settings: ServiceSettings, kind: str, options: dict[str, Any],
             xray: XRay | None = None) -> JobFn:
    """The work of a ``kind`` job: a study report, or an image job of :data:`saerad.service.tasks.KINDS`."""
    from saerad.service import tasks

    if kind == tasks.STUDY_REPORT:
        from saerad.pacs.client import PacsClient
        from saerad.service.studies import study_job

        client = PacsClient(settings.pacs)
        return lambda jid: study_job(jid, reporter, client, **options)
    return tasks.job_fn(reporter, kind, xray, options)


def resume_job(reporter: Reporter, settings: ServiceSettings) -> ResumeFn:
    """What the job runner calls to run a stored job again after a restart."""

    def rebuild(kind: str, stored: JobInput) -> JobFn:
        from saerad.service import tasks

        xray = tasks.restore_xray(stored) if stored.data else None
        return job_work(reporter, settings, kind, dict(stored.params.get("options", {})), xray)

    return rebuild


class ServiceState:
    """Everything a request handler needs, built once per process in the lifespan."""

    def __init__(self, settings: ServiceSettings, reporter: Reporter, store: JobStore, runner: JobRunner) -> None:
        self.settings = settings
        self.reporter = reporter
        self.store = store
        self.runner = runner
        self.ready = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="saerad-infer")
        bundle = reporter.bundle
        dictionary = bundle.dictionary
        # Report text of the top images never leaves the server, even if a bundle carries it.
        self.dictionary = dictionary.without_report_text() if hasattr(dictionary, "without_report_text") else dictionary
        self.n_features = int(bundle.sae.cfg.d_sae)
        self.has_diffusion = getattr(bundle, "diffusion_dir", None) is not None
        self.bundle_info: dict[str, Any] = bundle.info() if hasattr(bundle, "info") else {}

    def submit_job(self, kind: str, options: dict[str, Any], xray: XRay | None = None) -> str:
        """Queue a ``kind`` job (:func:`job_work`); its input (options, and ``xray`` for image jobs)
        is stored for a restart unless ``job_keep_inputs`` is off. Blocking (compression, SQLite):
        call it off the event loop."""
        from saerad.service import tasks

        fn = job_work(self.reporter, self.settings, kind, options, xray)
        stored = None
        if self.settings.job_keep_inputs:
            stored = tasks.job_input(xray, options) if xray is not None else JobInput({"options": options}, b"")
        return self.runner.submit(kind, fn, job_input=stored)

    async def run_inference(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the inference pool, keeping the request's context (request id for logs)."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: ctx.run(fn, *args, **kwargs))

    def warm_up(self) -> None:
        """Two synthetic images through the whole report path (the first call pays one-off costs)."""
        from saerad.imaging import XRay

        try:
            t0 = time.perf_counter()
            yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 511.0
            pixels = (0.25 + 0.5 * np.sin(np.pi * xx) * (0.5 + 0.5 * yy)).astype(np.float32)
            xray = XRay(pixels=pixels, original_size=(512, 512), source_format="png")
            if self.settings.warmup:
                for _ in range(2):
                    self.executor.submit(self.reporter.report, xray).result()
            self.ready.set()
            log.info("ready (warm-up %.0f ms)", (time.perf_counter() - t0) * 1000.0)
        except Exception:
            log.exception("warm-up failed; /readyz stays 503")

    def close(self) -> None:
        self.runner.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()
