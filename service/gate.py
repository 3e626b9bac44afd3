"""The one door every request passes: who is calling, decided before any body is read.

Deny by default. A request reaches a route or a mounted app (optuna-dashboard included)
only with a principal: from an ``Authorization: Bearer`` token, or from the session cookie
that ``POST /auth/session`` sets for browsers (which cannot add a header to
optuna-dashboard's requests). Without auth (``ADAMP_TUNE_AUTH=off``, or ``auto`` on
loopback) a request without credentials acts as the default owner. The few paths anyone
may fetch are listed in ``PUBLIC``, each with its reason; a route added later is protected
without anyone remembering to protect it.

Because the gate is plain ASGI and answers ``401`` itself, an anonymous upload is refused
before a byte of its body is read. It also refuses, in every auth mode:

* a state-changing request from another site (``Origin`` or ``Sec-Fetch-Site`` says so),
  so a web page cannot drive a service on ``127.0.0.1`` through the visitor's browser;
* a state-changing request authenticated by the cookie without the matching
  ``X-CSRF-Token`` header (double submit: the value is derived from the session's token,
  readable by the dashboard's script from the ``adamp_tune_csrf`` cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import Principal, authenticate
from service.errors import Unauthenticated
from service.middleware import send_error

SESSION_COOKIE = "adamp_tune_session"
CSRF_COOKIE = "adamp_tune_csrf"
CSRF_HEADER = "x-csrf-token"
PRINCIPAL_KEY = "adamp_tune.principal"
"""Where the gate leaves the caller in the ASGI scope (``service.api.deps`` reads it)."""
ANONYMOUS_KEY = "adamp_tune.anonymous"
"""``True`` in the scope when the caller presented no valid token (the rate limiter then
tells callers apart by address, since they all act as the default owner)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Public:
    """A path anyone may fetch, and why that is safe."""

    methods: frozenset[str]
    pattern: re.Pattern[str]
    why: str


_GET = frozenset({"GET", "HEAD"})
PUBLIC: tuple[Public, ...] = (
    Public(_GET, re.compile(r"/healthz"), "liveness probes of orchestrators carry no token"),
    Public(_GET, re.compile(r"/dashboard/static/[\w.-]+"), "the dashboard's own JS and CSS"),
    Public(_GET, re.compile(r"/dashboard/plotly\.min\.js"), "plotly.js as its package ships"),
    Public(_GET, re.compile(r"/optuna/static/[\w./-]+"), "optuna-dashboard's bundle"),
    Public(_GET, re.compile(r"/optuna/favicon\.ico"), "optuna-dashboard's icon"),
    Public(_GET, re.compile(r"/docs/static/[\w.-]+"), "Swagger UI's and ReDoc's files"),
    Public(_GET, re.compile(r"/(docs|redoc|openapi\.json)"), "the API's description, no data"),
    Public(
        frozenset({"POST", "DELETE"}),
        re.compile(r"/auth/session"),
        "signing in (the token is checked there) and out",
    ),
)


def is_public(method: str, path: str) -> bool:
    """Whether ``method path`` is on the allow-list (no credentials needed)."""
    return any(method in p.methods and p.pattern.fullmatch(path) for p in PUBLIC)


def csrf_value(token: str) -> str:
    """The CSRF value that goes with a session token: knowable only by who holds the token."""
    return hashlib.sha256(b"adamp-tune csrf\0" + token.encode()).hexdigest()[:32]


_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "dashboard" / "templates"),
    autoescape=select_autoescape(["html"]),
)


class AuthGate:
    """ASGI middleware: sets the principal in the scope, or answers 401/403 itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not hasattr(scope["app"].state, "adamp"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.adamp
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if method not in SAFE_METHODS and _cross_site(headers):
            await _refuse(send, 403, "a request from another site may not change anything here")
            return
        public = is_public(method, path)
        token, via_cookie = _credentials(headers)
        principal: Principal | None = None
        problem = "this service needs an API token"
        if token:
            try:
                principal = await anyio.to_thread.run_sync(authenticate, state.sessions, token)
            except Unauthenticated as err:
                if not via_cookie and not public:
                    await _refuse(send, 401, str(err))
                    return
                problem = f"your session ended: {err}"
        anonymous = principal is None
        if principal is None and not public:
            if state.settings.auth_required:
                await _sign_in_please(send, method, headers, problem)
                return
            principal = Principal(state.settings.default_owner, admin=True)
        if (
            principal is not None
            and via_cookie
            and method not in SAFE_METHODS
            and not public
            and not hmac.compare_digest(headers.get(CSRF_HEADER, ""), csrf_value(token or ""))
        ):
            await _refuse(
                send, 403, f"send the {CSRF_COOKIE} cookie's value in an X-CSRF-Token header"
            )
            return
        scope[PRINCIPAL_KEY] = principal
        scope[ANONYMOUS_KEY] = anonymous
        await self.app(scope, receive, send)


def _credentials(headers: dict[str, str]) -> tuple[str | None, bool]:
    """The presented token and whether it came from the session cookie (not a header)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no credential
        return None, False
    morsel = cookies.get(SESSION_COOKIE)
    return (morsel.value, True) if morsel is not None and morsel.value else (None, False)


def _cross_site(headers: dict[str, str]) -> bool:
    """Whether a browser sent this from another origin (another port of localhost too).

    Browsers send ``Sec-Fetch-Site`` and, on cross-origin writes, ``Origin``; the CLI,
    the Python client and curl send neither and are not refused.
    """
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    host = headers.get("host", "")
    return origin.rstrip("/") not in (f"http://{host}", f"https://{host}")


async def _refuse(send: Send, status: int, message: str) -> None:
    await send_error(
        send, status, message, [(b"www-authenticate", b"Bearer")] if status == 401 else None
    )


async def _sign_in_please(send: Send, method: str, headers: dict[str, str], problem: str) -> None:
    """401: the sign-in page for a browser navigating here, a JSON error for anything else."""
    if method != "GET" or "text/html" not in headers.get("accept", ""):
        await _refuse(
            send,
            401,
            f"{problem}: send `Authorization: Bearer <token>` "
            "(create one with `adamp-tune token create YOUR_NAME`)",
        )
        return
    page = _TEMPLATES.get_template("sign_in.html").render(problem=problem).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"%d" % len(page)),
                (b"cache-control", b"no-store"),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})
