"""The scheduler lease: at most one process schedules at a time, and a dead one is replaced.

Acquire and renew are single conditional ``UPDATE`` statements, atomic on SQLite and
PostgreSQL alike: a process takes the lease only if it has expired, and renews it only if it
still holds it under the same epoch. Each takeover bumps the epoch.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import SchedulerLease, utcnow
from service.repository import rowcount

log = logging.getLogger(__name__)
LEASE_NAME = "scheduler"


class Lease:
    """This process's claim on the scheduler lease."""

    def __init__(self, sessions: sessionmaker[Session], holder: str, ttl_s: float) -> None:
        self._sessions = sessions
        self.holder = holder
        self.ttl = timedelta(seconds=ttl_s)
        self.epoch: int | None = None

    @property
    def held(self) -> bool:
        """Whether the last acquire or renew succeeded."""
        return self.epoch is not None

    def acquire_or_renew(self) -> bool:
        """Renew the lease if held, else take it if free or expired; ``True`` if held now."""
        now = utcnow()
        table = SchedulerLease
        with self._sessions.begin() as session:
            if self.epoch is not None:
                renewed = rowcount(
                    session.execute(
                        update(table)
                        .where(
                            table.name == LEASE_NAME,
                            table.holder == self.holder,
                            table.epoch == self.epoch,
                        )
                        .values(expires_at=now + self.ttl)
                    )
                )
                if renewed:
                    return True
                log.warning("scheduler lease lost (another process took it over)")
                self.epoch = None
                return False
            taken = rowcount(
                session.execute(
                    update(table)
                    .where(table.name == LEASE_NAME, table.expires_at < now)
                    .values(
                        holder=self.holder,
                        epoch=table.epoch + 1,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
            )
            if not taken:
                exists = session.get(table, LEASE_NAME) is not None
                if exists:
                    return False
        if not taken:
            try:
                with self._sessions.begin() as session:
                    session.execute(
                        insert(table).values(
                            name=LEASE_NAME,
                            holder=self.holder,
                            epoch=1,
                            acquired_at=now,
                            expires_at=now + self.ttl,
                        )
                    )
            except IntegrityError:
                return False  # another process inserted it first
        with self._sessions() as session:
            row = session.get(table, LEASE_NAME)
            if row is None or row.holder != self.holder:
                return False
            self.epoch = row.epoch
        log.info("scheduler lease acquired by %s (epoch %s)", self.holder, self.epoch)
        return True

    def release(self) -> None:
        """Give the lease up at once so a standby can take over without waiting."""
        if self.epoch is None:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == LEASE_NAME,
                    SchedulerLease.holder == self.holder,
                    SchedulerLease.epoch == self.epoch,
                )
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        self.epoch = None
