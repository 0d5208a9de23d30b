"""Pure-ASGI middleware: request ids + access log + catch-all 500, API key, body size and time limits.

Pure ASGI (not ``BaseHTTPMiddleware``) because the body limits must act on the byte stream *while it
arrives*, before multipart parsing spools an oversized upload to disk, and because the catch-all must
own the 500 response so no traceback or input ever reaches a client. Order, outermost first:
request context -> CORS -> API key -> body limit -> FastAPI.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saerad.service.errors import (
    INTERNAL_ERROR_BODY,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    UnauthorizedError,
    error_body,
)
from saerad.service.logs import request_id_var

log = logging.getLogger("saerad.service")
access_log = logging.getLogger("saerad.service.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, exc: ServiceError) -> None:
    """Answer with ``exc``'s status, JSON body and headers (the middleware runs before FastAPI's handlers)."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send_json(send, exc.http_status, error_body(exc.code, exc.message), headers)


class RequestContextMiddleware:
    """Request id in and out, one access-log line per request, and the catch-all 500.

    A client-supplied ``X-Request-ID`` is kept when it is short and plain (so ids can be traced
    across a gateway) and replaced otherwise (so it cannot inject text into logs).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        state = {"status": 500, "started": False, "bytes_out": 0, "bytes_in": 0}
        t0 = time.perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["bytes_in"] += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_id)
        except Exception:
            # The traceback goes to the log (code lines and exception types, never request data);
            # the client gets a generic body with the request id to quote.
            log.exception("unhandled error", extra={"method": scope.get("method"), "path": _route_path(scope)})
            state["status"] = 500
            if not state["started"]:
                await send_json(send, 500, INTERNAL_ERROR_BODY, [(b"x-request-id", request_id.encode())])
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": _route_path(scope),
                    "status": state["status"],
                    "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
                    "bytes_in": state["bytes_in"],
                    "bytes_out": state["bytes_out"],
                },
            )
            request_id_var.reset(token)


def _route_path(scope: Scope) -> str:
    """The route template when known (``/v1/jobs/{job_id}``), else the raw path, truncated."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else str(scope.get("path", ""))[:200]


class ApiKeyMiddleware:
    """Rejects requests without the configured key (``X-API-Key`` or ``Authorization: Bearer``).

    ``hmac.compare_digest`` keeps the comparison time independent of where the strings differ.
    Health probes stay open so orchestrators need no secret; CORS preflights are answered by the
    CORS middleware outside this one.
    """

    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-api-key")
        if given is None:
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.key):
            await send_error(send, UnauthorizedError(
                "missing or wrong API key (header X-API-Key)", headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
            ))
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``, 408 for bodies that stall or trickle in.

    Size: at once from Content-Length, else while the bytes stream in. Time: each chunk must arrive
    within ``idle_timeout_s`` of the previous one and the whole body within ``total_timeout_s``, so
    a client that declares 100 kB and sends 70 bytes (or one byte a second) cannot hold a
    connection and its handler forever. When a limit trips, ``receive`` raises (FastAPI re-raises
    it) and, whatever the app then tries to send, the response is replaced by the error's JSON,
    with ``Connection: close``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, idle_timeout_s: float = 15.0,
                 total_timeout_s: float = 300.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.total_timeout_s = total_timeout_s

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"request body exceeds the limit of {self.max_bytes} bytes",
                                    headers={"Connection": "close"})

    def _too_slow(self, received: int, declared: str | None, idle: bool) -> RequestTimeoutError:
        of = f" of {declared}" if declared and declared.isdigit() else ""
        why = (f"no data for {self.idle_timeout_s:g} s" if idle
               else f"not complete after {self.total_timeout_s:g} s")
        return RequestTimeoutError(f"the request body stalled ({why}; {received}{of} bytes arrived)",
                                   headers={"Connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, self._too_large())
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout_s
        state: dict = {"total": 0, "error": None, "started": False, "complete": False}

        def trip(error: ServiceError) -> HTTPException:
            state["error"] = error
            return HTTPException(error.http_status, error.message)

        async def limited_receive() -> Message:
            if state["error"] is not None:
                raise HTTPException(state["error"].http_status, state["error"].message)
            if state["complete"]:
                return await receive()  # only a disconnect can follow: no timeout applies
            wait = min(self.idle_timeout_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                raise trip(self._too_slow(state["total"], declared, idle=wait >= self.idle_timeout_s)) from None
            if message["type"] == "http.request":
                state["total"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["total"] > self.max_bytes:
                    raise trip(self._too_large())
            return message

        async def guarded_send(message: Message) -> None:
            if state["error"] is not None:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await send_error(send, state["error"])
                return  # swallow whatever the app wanted to send instead
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except HTTPException:
            if state["error"] is None:
                raise
            if not state["started"]:
                state["started"] = True
                await send_error(send, state["error"])
