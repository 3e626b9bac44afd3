"""``optuna-dashboard`` mounted under ``/optuna``, read-only, on the service's Optuna storage.

optuna-dashboard's front end assumes it owns the site root (``/static/bundle.js``,
``/api/...``, routes under ``/dashboard``); :func:`under_prefix` rewrites those few absolute
paths in its page, its bundle and its redirects so it works below a prefix.

The mount is for reading. Its writes (delete, rename, notes, tell, preferences, schema
migration) would change Optuna's tables behind the service's back: deleting a study there
would leave the service's row pointing at nothing. They are refused with ``405``; studies
change through ``/api/v1``. Who may read is decided before this app is reached
(``service.gate``); the numbers in its paths and queries are range-checked here, since its
own handlers would pass a 400-digit id to the database and answer 500.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import starlette.exceptions
from starlette.types import ASGIApp, Receive, Scope, Send

with warnings.catch_warnings():
    # Starlette's WSGI bridge is deprecated in favour of a2wsgi, which is not a dependency
    # (starlette is pinned in constraints.txt). Its warning is a StarletteDeprecationWarning,
    # a UserWarning, not a DeprecationWarning (older starlette: a DeprecationWarning).
    warnings.simplefilter(
        "ignore",
        getattr(starlette.exceptions, "StarletteDeprecationWarning", DeprecationWarning),
    )
    from starlette.middleware.wsgi import WSGIMiddleware

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_BUNDLE = "/static/bundle.js"
# Minified-code anchors of optuna-dashboard 0.21: the router's base and the API client's.
_BUNDLE_EDITS = (
    ('url_prefix:"/dashboard"', 'url_prefix:"{prefix}/dashboard"'),
    ('return e.slice(0,t)})(null!=e?e:"")', 'return e.slice(0,t)})(null!=e?e:"{prefix}")'),
)


def under_prefix(app: WSGIApp, prefix: str) -> WSGIApp:
    """optuna-dashboard's WSGI ``app`` with its absolute paths moved below ``prefix``."""

    def rewritten(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        # Its static handlers read the header unguarded (KeyError, a 500, when it is absent).
        environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")
        if path == _BUNDLE:
            environ["HTTP_ACCEPT_ENCODING"] = "identity"  # the plain file, not bundle.js.gz
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = status, headers
            return lambda _: None

        chunks = app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        headers: list[tuple[str, str]] = answer["headers"]
        kind = next((v for k, v in headers if k.lower() == "content-type"), "")
        if path == _BUNDLE:
            text = body.decode("utf-8")
            for old, new in _BUNDLE_EDITS:
                if old not in text:
                    log.warning("optuna-dashboard's bundle changed: %r not found", old)
                text = text.replace(old, new.replace("{prefix}", prefix))
            body = text.encode("utf-8")
        elif kind.startswith("text/html"):
            body = body.replace(b'src="/static/', f'src="{prefix}/static/'.encode())
        fixed = [
            (key, _below(value, prefix) if key.lower() == "location" else value)
            for key, value in headers
            if key.lower() != "content-length"
        ]
        fixed.append(("Content-Length", str(len(body))))
        start_response(answer["status"], fixed)
        return [body]

    return rewritten


def _below(location: str, prefix: str) -> str:
    """A redirect target of the app's own, moved below ``prefix``."""
    scheme, sep, rest = location.partition("://")
    if sep:
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host}{_below(slash + path, prefix)}"
    if location.startswith("/") and not location.startswith(prefix + "/"):
        return prefix + location
    return location


READ_METHODS = frozenset({"GET", "HEAD"})
LARGEST_NUMBER = 2**31 - 1
_NUMBERS = re.compile(r"\d+")
_NUMBER_LISTS = {
    "after": re.compile(r"\d{1,10}"),
    "trial_ids": re.compile(r"\d{1,10}(,\d{1,10})*"),
}


def refusal(method: str, path: str, query: str) -> tuple[int, str] | None:
    """Why a request may not reach optuna-dashboard (status, message), or ``None``."""
    if method not in READ_METHODS:
        return (
            405,
            "optuna-dashboard is mounted read-only here: change studies through /api/v1 "
            "(cancel one with POST /api/v1/studies/{id}/cancel)",
        )
    if any(len(n) > 10 or int(n) > LARGEST_NUMBER for n in _NUMBERS.findall(path)):
        return 404, f"no such page: numbers in the path are at most {LARGEST_NUMBER}"
    for key, value in parse_qsl(query, keep_blank_values=True):
        pattern = _NUMBER_LISTS.get(key)
        if pattern is not None and value and not pattern.fullmatch(value):
            return 422, f"{key}: must be whole numbers of at most 10 digits, separated by commas"
    return None


class OptunaDashboard:
    """An ASGI app that builds optuna-dashboard on first use.

    The storage exists only once the service's lifespan has run, so the WSGI app cannot be
    built when the route is mounted; it is built from the app state on the first request.
    """

    def __init__(self, prefix: str = "/optuna") -> None:
        self.prefix = prefix
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    def _build(self, scope: Scope) -> ASGIApp:
        with self._lock:
            if self._app is None:
                # Imported here: optuna-dashboard pulls in scikit-learn (its fANOVA), about
                # a second of every service start that a page never opened would pay.
                from optuna_dashboard import wsgi  # noqa: PLC0415

                storage = scope["app"].state.adamp.storage
                self._app = WSGIMiddleware(under_prefix(wsgi(storage), self.prefix))
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = refusal(
                scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1")
            )
            if refused is not None:
                status, message = refused
                body = json.dumps({"detail": message, "message": message}).encode()
                headers = [(b"content-type", b"application/json")]
                if status == 405:
                    headers.append((b"allow", b"GET, HEAD"))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        app = self._app or self._build(scope)
        await app(scope, receive, send)
