"""Many of Optuna's storage calls in one database transaction.

Optuna's ``RDBStorage`` commits every call on its own: an ``ask`` over three knobs is four
transactions (the trial, then one per sampled value), a ``tell`` another, each trial's
user attributes more. On the scheduler's loop those commits were most of the time between
a trial's end and the next start (``benchmarks/bookkeeping.py``: profiled, 2026-12-07).

Inside ``unit_of_work(storage)`` every call the current thread makes into the storage
shares one session and one transaction, committed once at the end; if anything in it
fails the whole unit is rolled back, so an ``ask`` is now all or nothing (before, a
database error between its writes left a trial with half its parameters). Other threads
are not affected: the storage's sessions are per thread.

How: every ``RDBStorage`` method opens its transaction through one module-level helper,
``optuna.storages._rdb.storage._create_scoped_session``; ``install()`` wraps it so that,
while a unit is open on the calling thread, it hands out the unit's session and leaves
the commit to the unit. Outside a unit the wrapper calls Optuna's own helper unchanged.
This leans on a private name of Optuna (pinned in ``constraints.txt``);
``tests/service/test_unit_of_work.py`` fails if an Optuna upgrade moves it.

A rolled-back unit may have left Optuna's per-process trial cache (``_CachedStorage``)
holding rows that were never committed; ``forget_cache`` drops that cache, and the next
read fills it again from the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import optuna
from optuna.storages._rdb import storage as _rdb_storage
from sqlalchemy.orm import Session

_local = threading.local()
_original: Callable[..., AbstractContextManager[Session]] = _rdb_storage._create_scoped_session


@contextmanager
def _scoped_session(scoped_session: Any, ignore_integrity_error: bool = False) -> Iterator[Session]:
    """Optuna's per-call transaction, or the open unit's session (committed by the unit)."""
    session: Session | None = getattr(_local, "session", None)
    if session is None:
        with _original(scoped_session, ignore_integrity_error) as own:
            yield own
        return
    yield session
    session.flush()  # errors of this call surface here, in the call that caused them


def install() -> None:
    """Route Optuna's RDB storage through ``_scoped_session`` (idempotent)."""
    _rdb_storage._create_scoped_session = _scoped_session


def backend_of(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    """The ``RDBStorage`` under Optuna's caching wrapper."""
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        raise TypeError("a unit of work needs Optuna's RDB storage")
    return backend


@contextmanager
def unit_of_work(storage: optuna.storages.BaseStorage) -> Generator[Session, None, None]:
    """One transaction for every storage call of this thread inside the ``with`` block.

    Nested units join the outer one. On an exception the unit is rolled back, Optuna's
    cache forgotten (``forget_cache``) and the exception re-raised.
    """
    if getattr(_local, "session", None) is not None:
        yield _local.session
        return
    install()
    session: Session = backend_of(storage).scoped_session()
    _local.session = session
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        forget_cache(storage)
        raise
    finally:
        _local.session = None
        session.close()


def forget_cache(storage: optuna.storages.BaseStorage) -> None:
    """Drop what Optuna's ``_CachedStorage`` remembers of trials (re-read on next use)."""
    if not isinstance(storage, optuna.storages._CachedStorage):
        return
    cached: Any = storage
    with cached._lock:
        cached._studies.clear()
        cached._trial_id_to_study_id_and_number.clear()
        cached._study_id_and_number_to_trial_id.clear()


install()
