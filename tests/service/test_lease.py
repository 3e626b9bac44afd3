"""The scheduler lease: one holder at a time, taken over only once it expires."""

from __future__ import annotations

import time
from pathlib import Path

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from service.scheduler.lease import Lease


def _sessions(tmp_path: Path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'lease.db'}")
    upgrade(engine)
    return session_factory(engine)


def test_one_holder_at_a_time_and_release_hands_over(tmp_path: Path) -> None:
    sessions = _sessions(tmp_path)
    a, b = Lease(sessions, "a", ttl_s=30), Lease(sessions, "b", ttl_s=30)
    assert a.acquire_or_renew()
    assert not b.acquire_or_renew()
    assert a.acquire_or_renew(), "the holder renews"
    a.release()
    assert not a.held
    assert b.acquire_or_renew()
    assert b.epoch == 2, "each new holder bumps the epoch"
    assert not a.acquire_or_renew()


def test_an_expired_lease_is_taken_over_and_the_old_holder_steps_down(tmp_path: Path) -> None:
    sessions = _sessions(tmp_path)
    a, b = Lease(sessions, "a", ttl_s=0.5), Lease(sessions, "b", ttl_s=0.5)
    assert a.acquire_or_renew()
    assert not b.acquire_or_renew()
    time.sleep(0.7)  # a stops renewing, as a dead process does
    assert b.acquire_or_renew()
    assert not a.acquire_or_renew(), "the old holder learns it lost the lease"
    assert not a.held
