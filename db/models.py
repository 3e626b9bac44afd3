"""SQLAlchemy models of the service's own tables.

Optuna owns its tables (``studies``, ``trials``, ...) in the same database; every table here
carries the ``adamp_tune_`` prefix and migrations keep their own version table, so the two
schemas never collide. Trials live in Optuna's tables only (one source of truth); these
tables hold what Optuna has no place for: the submitted job, its owner, status and events,
the scheduler's lease, users and API tokens.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TABLE_PREFIX = "adamp_tune_"


def utcnow() -> datetime:
    """Timezone-aware now, the only kind of timestamp stored."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use db.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class StudyStatus(enum.StrEnum):
    """Life cycle of a study: queued -> running -> completed | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the study can no longer change."""
        return self in (StudyStatus.COMPLETED, StudyStatus.FAILED, StudyStatus.CANCELLED)


ACTIVE_STATUSES = (StudyStatus.QUEUED.value, StudyStatus.RUNNING.value)


class Study(Base):
    """A tuning job: the validated request, who sent it, and where it stands.

    The Optuna study of the same ``name`` holds its trials.
    """

    __tablename__ = f"{TABLE_PREFIX}studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    name_key: Mapped[str] = mapped_column(String(512), unique=True)
    """The name as compared for uniqueness (NFKC, case-folded): look-alikes collide here."""
    owner: Mapped[str] = mapped_column(String(64), index=True)
    workload: Mapped[str] = mapped_column(String(64), index=True)
    optimizer: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    sampler: Mapped[str] = mapped_column(String(16))
    pruner: Mapped[str] = mapped_column(String(16))
    n_trials: Mapped[int] = mapped_column(Integer)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpus_per_trial: Mapped[float] = mapped_column(Float, default=0.0)
    cpus_per_trial: Mapped[float] = mapped_column(Float, default=1.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The request as validated: search space, fixed values, options."""
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.QUEUED.value)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    optuna_study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[StudyEvent]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name="status",
        ),
        CheckConstraint("n_trials > 0", name="n_trials_positive"),
        CheckConstraint("max_concurrent > 0", name="max_concurrent_positive"),
        Index(f"ix_{TABLE_PREFIX}studies_queue", "status", "priority", "created_at"),
    )


class StudyEvent(Base):
    """Something that happened to a study, for its timeline (submitted, started, retried...)."""

    __tablename__ = f"{TABLE_PREFIX}events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}studies.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    study: Mapped[Study] = relationship(back_populates="events")


class SchedulerLease(Base):
    """Who runs the scheduler: exactly one process holds an unexpired lease at a time.

    The holder renews ``expires_at`` every few seconds; another process may take the lease
    only once it has expired, and bumps ``epoch`` so the trials of the previous holder can
    be recognised as orphans.
    """

    __tablename__ = f"{TABLE_PREFIX}scheduler_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserRole(enum.StrEnum):
    """``admin`` may cancel and change everyone's studies; ``user`` only their own."""

    USER = "user"
    ADMIN = "admin"


class User(Base):
    """Someone who holds API tokens; created with ``adamp-tune token create NAME``."""

    __tablename__ = f"{TABLE_PREFIX}users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.USER.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    max_active_studies: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """This user's own limit on queued + running studies (``None``: the service's)."""
    max_running_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """This user's own limit on trials in flight at once (``None``: the service's)."""
    max_priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The highest priority this user may give a study (``None``: the service's cap)."""

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (CheckConstraint("role IN ('user', 'admin')", name="role"),)


class ApiToken(Base):
    """An API token; only its SHA-256 is stored, the token itself is shown once at creation."""

    __tablename__ = f"{TABLE_PREFIX}tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}users.name", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The token's first characters, to recognise it in listings."""
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """After this the token is refused (401, saying it expired); ``None`` never expires."""

    user: Mapped[User] = relationship(back_populates="tokens")


class Comparison(Base):
    """Optimizers tuned side by side on one workload, then re-trained on fresh seeds.

    Its studies are ordinary studies (``ComparisonStudy`` links them); ``phase`` says which
    step the driver (``service.comparisons.driver``) takes next, ``report`` holds the
    statistics once the evaluation studies have ended.
    """

    __tablename__ = f"{TABLE_PREFIX}comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    name_key: Mapped[str] = mapped_column(String(512), unique=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    workload: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The request as validated (``ComparisonCreate``)."""
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.QUEUED.value)
    phase: Mapped[str] = mapped_column(String(16), default="tuning")
    """``tuning`` -> ``evaluating`` -> ``done``."""
    stop_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    parts: Mapped[list[ComparisonStudy]] = relationship(
        back_populates="comparison", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name="status",
        ),
        CheckConstraint("phase IN ('tuning', 'evaluating', 'done')", name="phase"),
    )


class ComparisonStudy(Base):
    """One study of a comparison: the tuning or the evaluation study of one optimizer."""

    __tablename__ = f"{TABLE_PREFIX}comparison_studies"

    comparison_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}comparisons.id", ondelete="CASCADE"), primary_key=True
    )
    optimizer: Mapped[str] = mapped_column(String(16), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}studies.id", ondelete="CASCADE"), unique=True
    )

    comparison: Mapped[Comparison] = relationship(back_populates="parts")

    __table_args__ = (CheckConstraint("role IN ('tune', 'eval')", name="role"),)
