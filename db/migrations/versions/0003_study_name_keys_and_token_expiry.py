"""study name keys (look-alike names collide), token expiry, per-user limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:40:00

``name_key`` is the study name in NFKC form, case-folded: the unique column that makes
``Alice-Base``, ``alice-base`` and full-width ``alice-base`` (U+FF41 ...) one name.
Existing rows get their key computed here; rows whose keys already collide keep their
data, the later one's key suffixed with its id, so the migration never loses a study.
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(name: str) -> str:
    # A copy of service.names.name_key as of this revision: migrations do not import the app.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade() -> None:
    with op.batch_alter_table("adamp_tune_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=512), nullable=True))
    studies = sa.table(
        "adamp_tune_studies", sa.column("id", sa.Integer), sa.column("name", sa.String)
    )
    connection = op.get_bind()
    seen: set[str] = set()
    for study_id, name in connection.execute(
        sa.select(studies.c.id, studies.c.name).order_by(studies.c.id)
    ):
        key = _key(name)
        if key in seen:
            key = f"{key}#{study_id}"
        seen.add(key)
        connection.execute(
            sa.text("UPDATE adamp_tune_studies SET name_key = :key WHERE id = :id"),
            {"key": key, "id": study_id},
        )
    with op.batch_alter_table("adamp_tune_studies", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=512), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_adamp_tune_studies_name_key"), ["name_key"]
        )
    with op.batch_alter_table("adamp_tune_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", db.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("adamp_tune_users", schema=None) as batch_op:
        for column in ("max_active_studies", "max_running_trials", "max_priority"):
            batch_op.add_column(sa.Column(column, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adamp_tune_users", schema=None) as batch_op:
        for column in ("max_active_studies", "max_running_trials", "max_priority"):
            batch_op.drop_column(column)
    with op.batch_alter_table("adamp_tune_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("adamp_tune_studies", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_adamp_tune_studies_name_key"), type_="unique")
        batch_op.drop_column("name_key")
