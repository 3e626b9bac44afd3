"""Apply the service's Alembic migrations, safely when several processes start at once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

from db.models import TABLE_PREFIX

VERSION_TABLE = f"{TABLE_PREFIX}alembic_version"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x4144414D50  # "ADAMP": serialises migrations across processes


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Only the service's own tables take part in migrations; Optuna manages its own."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped with the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@contextmanager
def _exclusive_connection(engine: Engine) -> Iterator[Connection]:
    """A connection held under a cross-process lock: an advisory lock on PostgreSQL, a file
    lock on SQLite, taken there *before* connecting (a process's first connection to a new
    file switches it to WAL, which must not race another process's)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                connection.commit()
        return
    database = make_url(str(engine.url)).database or ""
    with open(f"{database}.migrate.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> None:
    """Bring the service's tables to the newest schema (a no-op when they are there)."""
    config = alembic_config()
    with _exclusive_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, ``None`` before the first migration."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
