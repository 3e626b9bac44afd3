"""What the app holds for its lifetime: settings, database, Optuna storage, scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.frozen import FrozenAnswers
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
    importance_cache: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    frozen_answers: FrozenAnswers = field(default_factory=FrozenAnswers)
    """Answers about studies that can no longer change (see ``service.frozen``)."""
