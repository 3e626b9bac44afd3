"""One engine per process and its session factory, tuned for SQLite and PostgreSQL.

SQLite (the embedded default) runs in WAL mode with a generous busy timeout so that the API,
the scheduler and Optuna's own storage can share one file; PostgreSQL connections are
checked before use so the service rides out a database restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_S = 30


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs mapped to the installed psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def engine_options(url: str) -> dict[str, Any]:
    """``create_engine`` keyword arguments for ``url`` (shared with Optuna's storage)."""
    if is_sqlite(url):
        return {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True, "pool_recycle": 300}


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL mode, set once per file (it is persistent) and only read afterwards: switching
    the journal mode needs the file to itself, and a switch racing other new connections
    can fail with "database is locked" whatever the busy timeout."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; creates the directory of a SQLite file if needed."""
    url = normalize_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **engine_options(url))
    if is_sqlite(url):
        event.listen(engine, "connect", _enable_sqlite_wal)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
