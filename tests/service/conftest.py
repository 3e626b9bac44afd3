"""What the scheduler's tests share: a migrated database, once on SQLite and once on
PostgreSQL, and its Optuna storage (tests/service/test_scheduler*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from service.optuna_glue import storage_for
from tests.support.postgres import POSTGRES, fresh_database


@pytest.fixture(params=["sqlite", POSTGRES])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file of the test's own, or a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
        return

    with fresh_database() as url:
        yield url


@pytest.fixture
def parts(database: str) -> Iterator[tuple[sessionmaker[Session], optuna.storages.BaseStorage]]:
    """The migrated database's sessions and its Optuna storage, as a scheduler takes them."""
    engine = create_db_engine(database)
    upgrade(engine)
    storage = storage_for(database)
    yield session_factory(engine), storage
    storage.remove_session()
    storage.engine.dispose()
    engine.dispose()
