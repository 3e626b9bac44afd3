"""The service's own tables, engine/session factory and Alembic migrations."""
