"""comparisons: optimizers tuned side by side, then re-trained on fresh seeds

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:50:00

Two new tables; nothing existing changes. A comparison's studies stay ordinary rows of
``adamp_tune_studies``, linked by ``adamp_tune_comparison_studies``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "adamp_tune_comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("name_key", sa.String(length=512), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("workload", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_adamp_tune_comparisons_status"),
        ),
        sa.CheckConstraint(
            "phase IN ('tuning', 'evaluating', 'done')",
            name=op.f("ck_adamp_tune_comparisons_phase"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adamp_tune_comparisons")),
        sa.UniqueConstraint("name", name=op.f("uq_adamp_tune_comparisons_name")),
        sa.UniqueConstraint("name_key", name=op.f("uq_adamp_tune_comparisons_name_key")),
    )
    with op.batch_alter_table("adamp_tune_comparisons", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_adamp_tune_comparisons_owner"), ["owner"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_adamp_tune_comparisons_workload"), ["workload"], unique=False
        )
    op.create_table(
        "adamp_tune_comparison_studies",
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("optimizer", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "role IN ('tune', 'eval')", name=op.f("ck_adamp_tune_comparison_studies_role")
        ),
        sa.ForeignKeyConstraint(
            ["comparison_id"],
            ["adamp_tune_comparisons.id"],
            name=op.f("fk_adamp_tune_comparison_studies_comparison_id_adamp_tune_comparisons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["adamp_tune_studies.id"],
            name=op.f("fk_adamp_tune_comparison_studies_study_id_adamp_tune_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "comparison_id", "optimizer", "role", name=op.f("pk_adamp_tune_comparison_studies")
        ),
        sa.UniqueConstraint("study_id", name=op.f("uq_adamp_tune_comparison_studies_study_id")),
    )


def downgrade() -> None:
    op.drop_table("adamp_tune_comparison_studies")
    with op.batch_alter_table("adamp_tune_comparisons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adamp_tune_comparisons_workload"))
        batch_op.drop_index(batch_op.f("ix_adamp_tune_comparisons_owner"))
    op.drop_table("adamp_tune_comparisons")
