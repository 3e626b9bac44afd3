"""The service's settings, read once from ``ADAMP_TUNE_*`` environment variables.

Unset, they give the embedded default: a SQLite file under the data directory, a local Ray
started in-process, the API on 127.0.0.1:8000. Nothing else reads ``os.environ``.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from db.engine import normalize_url


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "adamp-tune"


def _default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


class Settings(BaseSettings):
    """Everything configurable; each field is the environment variable ``ADAMP_TUNE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="ADAMP_TUNE_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the embedded SQLite database and logs live."""
    database_url: str | None = None
    """SQLAlchemy URL; unset means ``sqlite:///<data_dir>/adamp-tune.db``."""
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("ADAMP_TUNE_RAY_ADDRESS", "RAY_ADDRESS")
    )
    """Address of a running Ray cluster; unset starts a local Ray in-process."""
    ray_num_cpus: int | None = Field(default=None, ge=1)
    """CPUs the local Ray offers (embedded only); unset means all of this machine's."""
    ray_num_gpus: int | None = Field(default=None, ge=0)
    """GPUs the local Ray offers (embedded only); unset means those CUDA sees."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    default_owner: str = Field(default_factory=_default_owner)
    """Owner recorded for studies submitted without authentication."""
    auth: Literal["auto", "required", "off"] = "auto"
    """``required``: every /api/v1 call needs a Bearer token; ``auto``: required unless the
    service binds to loopback only (the embedded default)."""
    max_gpus_per_user: float | None = Field(default=None, gt=0)
    """GPUs one user's running trials may hold at once; unset means no limit."""
    max_active_studies_per_user: int | None = Field(default=50, ge=1)
    """Queued + running studies one user may have; more: 429. Admins are exempt, and an
    admin may set a user's own limit (``adamp-tune user limits``). Unset: no limit."""
    max_running_trials_per_user: int | None = Field(default=None, ge=1)
    """Trials of one user's studies in flight at once; unset means no limit."""
    max_user_priority: int = Field(default=0, ge=-100, le=100)
    """The highest ``priority`` a user (not an admin) may give a study; higher: 403."""
    scheduler: bool = True
    """Run the scheduler in this process (exactly one process holds the lease at a time)."""
    scheduler_lease_s: float = Field(default=10.0, gt=1.0)
    """A scheduler that has not renewed its lease for this long is replaced."""
    max_trial_attempts: int = Field(default=3, ge=1, le=100)
    """Runs of one configuration before a trial that keeps dying counts as failed."""
    max_preemptions: int = Field(default=3, ge=0, le=100)
    """Times one trial may be stopped and re-queued for a higher-priority study (0: never)."""
    preempt_non_checkpointing: bool = False
    """Preempt trials of workloads that do not checkpoint too (they restart from scratch)."""
    shutdown_grace_s: float = Field(default=20.0, ge=0.0)
    """On SIGTERM, how long running trials get to stop before the process exits."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_grid_points: int = Field(default=100_000, ge=1, le=10_000_000)
    """Largest grid a study may search (the product of its knobs' points); larger: 422."""
    api_threads: int = Field(default=8, ge=1, le=256)
    """Request handlers that run at once (more wait their turn): bounds the share of the
    interpreter that readers can take from the scheduler in the same process."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    """Largest request body accepted; larger ones are refused with 413 while being read."""
    rate_limit_per_s: float = Field(default=20.0, ge=0.0)
    """Requests a second one user (or, without a token, one address) may make on average;
    over it: 429 with ``Retry-After``. A heavy read counts as ``heavy_read_cost``. 0: off."""
    rate_limit_burst: int = Field(default=200, ge=1)
    """Requests one user may make at once before ``rate_limit_per_s`` applies."""
    heavy_read_cost: int = Field(default=10, ge=1)
    """What one heavy read (importances, plots, a page of over 200 trials, a checkpoint
    download) counts against a user's rate."""
    heavy_reads_per_s: float = Field(default=4.0, ge=0.0)
    """Heavy reads a second the service answers for all users together (bursts of five
    seconds' worth); over it: 429 with ``Retry-After``. 0: no service-wide budget."""
    rate_limit_admin_factor: float = Field(default=5.0, ge=1.0)
    """Admins (by token) get this many times ``rate_limit_per_s`` and ``rate_limit_burst``;
    they share ``heavy_reads_per_s`` like everyone."""
    session_cookie_max_age_s: int = Field(default=12 * 3600, ge=60)
    """How long a dashboard sign-in lasts (never past the token's own expiry)."""

    checkpoints: bool = True
    """Whether trials may save checkpoints (and re-runs resume from them)."""
    checkpoint_url: str | None = None
    """Where checkpoints live: any fsspec URL (a path, an NFS mount every node sees,
    ``s3://bucket/prefix``); unset means ``<data_dir>/checkpoints``, which only the nodes of
    this machine see."""
    checkpoint_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0.0)
    """How long after a study ends the checkpoints of its trials other than the best are
    kept; the best trial's stays until the study is deleted."""
    checkpoint_sweep_s: float = Field(default=300.0, gt=0.0)
    """How often the service deletes checkpoints past their retention."""

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, url: str | None) -> str | None:
        return normalize_url(url) if url else None

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL in use, the embedded SQLite file when none was given."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'adamp-tune.db').expanduser().resolve()}"

    @cached_property
    def resolved_checkpoint_url(self) -> str | None:
        """The checkpoint store's URL; ``None`` when checkpoints are off.

        One folder per database (``db-<hash of its URL>``) under the configured root, so
        two services sharing a root but not a database never mix up (or clean up) each
        other's studies, whose ids overlap."""
        if not self.checkpoints:
            return None
        base = self.checkpoint_url or str((self.data_dir / "checkpoints").expanduser().resolve())
        url = make_url(self.resolved_database_url).render_as_string(hide_password=True)
        return f"{base.rstrip('/')}/db-{hashlib.sha256(url.encode()).hexdigest()[:12]}"

    @property
    def auth_required(self) -> bool:
        """Whether API calls need a token (``auto``: when reachable beyond this machine)."""
        if self.auth == "auto":
            return self.host not in ("127.0.0.1", "localhost", "::1")
        return self.auth == "required"

    @property
    def embedded_ray(self) -> bool:
        """Whether this process starts its own local Ray."""
        return not self.ray_address
