"""The service's schema migrates cleanly beside Optuna's, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from db.engine import create_db_engine
from db.migrate import VERSION_TABLE, alembic_config, current_revision, head_revision, upgrade
from db.models import Base
from tests.support.postgres import POSTGRES, sqlite_or_postgres

OURS = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(params=["sqlite", POSTGRES])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, tmp_path / "m.db") as fresh:
        yield fresh


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    eng = create_db_engine(url)
    yield eng
    eng.dispose()


def test_upgrade_creates_only_prefixed_tables_and_is_idempotent(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert tables == OURS | {VERSION_TABLE}
    assert all(t.startswith("adamp_tune_") for t in tables)
    assert current_revision(engine) == head_revision()


def test_optuna_and_the_service_share_a_database_without_touching_each_other(
    url: str, engine: Engine
) -> None:
    optuna.create_study(study_name="theirs", storage=url)
    optuna_tables = set(inspect(engine).get_table_names())
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert tables == optuna_tables | OURS | {VERSION_TABLE}
    assert optuna.load_study(study_name="theirs", storage=url).study_name == "theirs"
    # Downgrading ours leaves Optuna's schema and data alone.
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        connection.commit()
    assert set(inspect(engine).get_table_names()) == optuna_tables | {VERSION_TABLE}
    assert optuna.get_all_study_names(url) == ["theirs"]


def test_processes_starting_together_migrate_once(url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        eng = create_db_engine(url)
        try:
            upgrade(eng)
        except BaseException as err:
            errors.append(err)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check = create_db_engine(url)
    assert current_revision(check) == head_revision()
    check.dispose()
