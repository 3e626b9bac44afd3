"""Alembic environment for the service's own tables (never Optuna's).

Run through ``db.migrate.upgrade`` (the service does so at start-up) or, for developers,
``alembic -c db/alembic.ini revision --autogenerate -m "..."`` with
``ADAMP_TUNE_DATABASE_URL`` set.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from db.engine import create_db_engine
from db.migrate import VERSION_TABLE, include_name
from db.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Use the connection ``db.migrate`` handed over, or open one from the environment."""
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ["ADAMP_TUNE_DATABASE_URL"]
    engine = create_db_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run them online")
run_migrations_online()
