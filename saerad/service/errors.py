"""Every error the service returns has one JSON shape: ``{"error": {"code", "message"}}``.

Clients (and the schema fuzzer) rely on two promises: a bad request is a 4xx with a machine-readable
``code``, and a server fault is a generic 500 whose body says nothing about the input. Library errors
(:class:`saerad.errors.SaeradError`) already carry ``code`` and ``http_status``; the few conditions
only the service knows (queue full, not ready, ...) are subclasses of it here, so each code and
status is written once: the exception handler and the pure-ASGI middleware (which answers before
FastAPI runs) both build their bodies from these classes.
Validation errors are rewritten without pydantic's ``input`` echo, which could repeat uploaded data.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from saerad.errors import SaeradError

log = logging.getLogger("saerad.service")


class ServiceError(SaeradError):
    """A condition of the service rather than of the input; may carry response headers."""

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message, code=code)
        self.headers = headers or {}


class NotFoundError(ServiceError):
    code = "not_found"
    http_status = 404


class UnsupportedMediaTypeError(ServiceError):
    code = "unsupported_media_type"
    http_status = 415


class PayloadTooLargeError(ServiceError):
    code = "payload_too_large"
    http_status = 413


class RequestTimeoutError(ServiceError):
    code = "request_timeout"
    http_status = 408


class QueueFullError(ServiceError):
    code = "queue_full"
    http_status = 429


class NotReadyError(ServiceError):
    code = "not_ready"
    http_status = 503


class CapabilityError(ServiceError):
    """The request is valid but this bundle cannot serve it (e.g. no diffusion model)."""

    code = "not_supported_by_bundle"
    http_status = 409


class UnauthorizedError(ServiceError):
    code = "unauthorized"
    http_status = 401


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_options",
    429: "too_many_requests",
    503: "not_ready",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    return error_response(exc.http_status, exc.code, exc.message, headers=exc.headers or None)


INTERNAL_ERROR_BODY = error_body("internal_error", "internal server error; see the server log (request id)")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route may return."""
    return {
        s: {"description": _HTTP_CODES.get(s, "error"), "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for s in statuses
    }


async def _saerad_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SaeradError)
    status = int(getattr(exc, "http_status", 400))
    if status >= 500 and not isinstance(exc, ServiceError):
        # A library error mapped to 5xx (e.g. a broken bundle) is our fault: keep details in the log.
        log.error("server-side error %s: %s", exc.code, type(exc).__name__)
    headers = getattr(exc, "headers", None) or None
    return error_response(status, exc.code, exc.message, headers=headers)


def _multipart_expected(request: Request) -> bool:
    """Whether the matched route takes form fields (so a non-multipart body is a 415, not a 422)."""
    from fastapi import params

    dependant = getattr(request.scope.get("route"), "dependant", None)
    body_params = getattr(dependant, "body_params", None) or []
    return any(isinstance(getattr(p, "field_info", None), params.Form) for p in body_params)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    ctype = request.headers.get("content-type", "")
    if _multipart_expected(request) and not ctype.lower().startswith("multipart/form-data"):
        return service_error_response(UnsupportedMediaTypeError(
            "send the image as multipart/form-data with a 'file' part "
            f"(got content type {ctype.split(';')[0][:80]!r})"
        ))
    details = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5]) or "invalid request"
    return error_response(422, "invalid_options", summary, details=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code >= 500:
        message = "internal server error"
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers; the catch-all 500 lives in the outermost middleware."""
    app.add_exception_handler(SaeradError, _saerad_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
