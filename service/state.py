"""What the app holds for its lifetime: settings, database, Optuna storage, scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.cluster import Cluster
from service.frozen import FrozenAnswers
from service.offload import Offload
from service.plot_cache import PlotCache
from service.scheduler import Scheduler
from service.settings import Settings


@dataclass
class AppState:
    """Built once at start-up by ``service.app`` and reached through ``service.api.deps``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: optuna.storages.BaseStorage
    scheduler: Scheduler | None
    cluster: Cluster
    """Where trials run; the API reads nodes, capacity and connection from it."""
    importance_cache: PlotCache = field(default_factory=PlotCache)
    """The latest parameter importances of each study, bounded like the plots."""
    page_cache: PlotCache = field(default_factory=lambda: PlotCache(min_refresh_s=0.5))
    """The latest large pages of trials of running studies (``service.api.trials``)."""
    plot_cache: PlotCache = field(default_factory=PlotCache)
    """The dashboard's latest plots of each study (see ``service.plot_cache``)."""
    offload: Offload = field(default_factory=Offload)
    """The worker process of fANOVA and the plots (``service.offload``)."""
    frozen_answers: FrozenAnswers = field(default_factory=FrozenAnswers)
    """Answers about studies that can no longer change (see ``service.frozen``)."""
