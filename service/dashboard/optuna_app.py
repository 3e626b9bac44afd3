"""``optuna-dashboard`` mounted under ``/optuna``, on the service's own Optuna storage.

optuna-dashboard's front end assumes it owns the site root (``/static/bundle.js``,
``/api/...``, routes under ``/dashboard``); :func:`under_prefix` rewrites those few absolute
paths in its page, its bundle and its redirects so it works below a prefix.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import starlette.exceptions
from optuna_dashboard import wsgi
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
                storage = scope["app"].state.adamp.storage
                self._app = WSGIMiddleware(under_prefix(wsgi(storage), self.prefix))
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or self._build(scope)
        await app(scope, receive, send)
