"""What the scheduler's tests share: a migrated database, once on SQLite and once on
PostgreSQL, and its Optuna storage (tests/service/test_scheduler*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import POSTGRES, sqlite_or_postgres
from tests.support.scheduling import Parts, migrated


@pytest.fixture(params=["sqlite", POSTGRES])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file of the test's own, or a fresh PostgreSQL database (dropped after)."""
    with sqlite_or_postgres(request.param, tmp_path / "scheduler.db") as url:
        yield url


@pytest.fixture
def parts(database: str) -> Iterator[Parts]:
    """The migrated database's sessions and its Optuna storage, as a scheduler takes them."""
    with migrated(database) as parts:
        yield parts
