"""``/docs`` (Swagger UI) and ``/redoc`` served from this service, with no CDN.

The files come from the ``fastapi-offline`` package; the pages load them and a small
start-up script from this origin only, so the Content-Security-Policy needs no inline
script and ``/docs`` works on an air-gapped cluster.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"


_SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · API</title>
<link rel="icon" href="/docs/static/favicon.png">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/dashboard/static/docs.js"></script></body></html>
"""
_REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · API</title>
<link rel="icon" href="/docs/static/favicon.png"></head>
<body><redoc spec-url="{openapi}"></redoc>
<script src="/docs/static/redoc.standalone.js"></script></body></html>
"""


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their files (the app is built with both URLs off)."""
    openapi = app.openapi_url or "/openapi.json"
    app.mount("/docs/static", StaticFiles(directory=ASSETS), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_SWAGGER.format(title=app.title, openapi=openapi))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return HTMLResponse(_REDOC.format(title=app.title, openapi=openapi))
