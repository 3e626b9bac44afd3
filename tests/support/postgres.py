"""A throw-away PostgreSQL database per test session on the server the tests are given."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
"""The PostgreSQL case of a ``params=["sqlite", POSTGRES]`` fixture, marked at collection:
``-m "not postgres"`` deselects it, and the lanes (tests/conftest.py) keep it beside the
test that restarts the server."""


def server_url() -> str:
    """Where the tests' PostgreSQL is (``ADAMP_TUNE_TEST_POSTGRES_URL``, else the local one)."""
    url = os.environ.get("ADAMP_TUNE_TEST_POSTGRES_URL", DEFAULT_URL)
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@contextmanager
def sqlite_or_postgres(kind: str, sqlite_file: Path) -> Iterator[str]:
    """The URL of an empty database for a ``params=["sqlite", POSTGRES]`` fixture:
    ``sqlite_file``, or a fresh PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    with fresh_database() as url:
        yield url


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    admin_url = server_url()
    name = f"adamp_tune_test_{secrets.token_hex(4)}"
    # No pool: a connection must not outlive a server restart some test causes.
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        raise RuntimeError(
            f"cannot create a test database on {make_url(admin_url).render_as_string()}: {err}. "
            "Start PostgreSQL (make test does so when it is installed locally) or point "
            "ADAMP_TUNE_TEST_POSTGRES_URL at a server where the tests may create databases."
        ) from err
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
