"""Structured JSON logs with request ids, and nothing from the patient in them.

Why a whitelist: log lines end up in shared log stores with looser access than the PACS. Only the
fields named in ``SAFE_FIELDS`` (method, route path, status, timings, ids, counts) leave a record;
anything else passed through ``extra=`` is dropped, so a careless ``extra={"report": ...}`` cannot
leak report text, DICOM tags or pixel data. The request id rides a context variable, so lines written
from the thread pool and from job threads carry it too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("saerad_request_id", default=None)

SAFE_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "job_id",
    "job_kind",
    "client",
)


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id (or ``None`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and whitelisted fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key in SAFE_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


def configure_logging(level: str = "INFO", as_json: bool = True) -> None:
    """Route saerad and uvicorn logs through one handler on stderr (idempotent).

    uvicorn's own access log is switched off by ``saerad serve``: it prints the query string and
    client address; our access line (middleware) prints the route path, status and timing only.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name("saerad-service")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "saerad-service":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
