"""An Optuna storage on a fresh SQLite file with the service's tables, for tests of the
scheduler's storage writes without a service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from db.engine import create_db_engine
from db.migrate import upgrade
from service.optuna_glue import storage_for


@contextmanager
def optuna_storage_at(path: Path) -> Iterator[optuna.storages.BaseStorage]:
    """Optuna's cached storage on ``path`` (migrated), disposed of afterwards."""
    url = f"sqlite:///{path}"
    engine = create_db_engine(url)
    upgrade(engine)
    rdb = storage_for(url)
    try:
        yield optuna.storages.get_storage(rdb)
    finally:
        rdb.engine.dispose()
        engine.dispose()
