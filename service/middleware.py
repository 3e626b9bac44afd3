"""Plain ASGI middlewares every request passes: size limit, security headers, latency.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one costs a task and a
stream per request, a sizeable share of a small JSON answer.
"""

from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

# The dashboard's pages load scripts and styles from this origin only; Plotly and
# optuna-dashboard set element styles inline (hence 'unsafe-inline' for styles, never for
# scripts); ReDoc runs a worker from a blob. Nothing may frame the pages.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


async def send_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """An error answer in the API's shape (``detail`` and ``message``) from plain ASGI code,
    for the doors that answer before any route does (gate, rate limits, body limit)."""
    body = json.dumps({"detail": message, "message": message}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": start + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every answer (errors and mounted apps included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [_framing_denied(k, v) for k, v in message.get("headers", [])]
                names = {k.lower() for k, _ in headers}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _framing_denied(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    """A mounted app's own CSP (optuna-dashboard's) kept, with framing forbidden in it too."""
    if key.lower() == b"content-security-policy" and b"frame-ancestors" not in value:
        value = value.rstrip(b"; ") + b"; frame-ancestors 'none'; base-uri 'none'"
    return key, value


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body outgrows the limit while it is being read.

    An ``HTTPException``, so that FastAPI's body parsing passes it on (rather than turning
    it into a 400) and ``service.api.errors`` answers it as a 413.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            f"the body passed {max_bytes} bytes; requests are limited to {max_bytes} bytes "
            "(ADAMP_TUNE_MAX_BODY_BYTES)",
        )


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with ``413``, counting while reading.

    A declared ``Content-Length`` over the limit is refused before anything is read; a
    chunked body is cut off as soon as it passes the limit, so memory never holds more.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._too_large(send, "Content-Length is not a number", status=400)
                    return
                if declared > self.max_bytes:
                    await self._too_large(send, f"the body is {declared} bytes")
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(send, f"the body passed {self.max_bytes} bytes")

    async def _too_large(self, send: Send, why: str, status: int = 413) -> None:
        message = (
            f"{why}; requests are limited to {self.max_bytes} bytes (ADAMP_TUNE_MAX_BODY_BYTES)"
            if status == 413
            else why
        )
        await send_error(send, status, message, [(b"connection", b"close")])


class LatencyMiddleware:
    """Records each request's latency by route in ``metrics.REQUEST_LATENCY``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            metrics.REQUEST_LATENCY.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)
