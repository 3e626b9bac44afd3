"""The web dashboard: studies list, one live study page, Optuna's plots, optuna-dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.dashboard.optuna_app import OptunaDashboard
from service.dashboard.routes import router

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    """Add the dashboard's pages, its JSON endpoints, static files and ``/optuna``."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.mount("/optuna", OptunaDashboard(), name="optuna-dashboard")
