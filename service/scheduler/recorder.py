"""The scheduler's storage writes, in order, batched, on a thread of their own.

The loop decides and dispatches; every write it would have made (a trial's placement, its
reports, user attributes, events, Optuna's tell, study status changes) is queued here
instead, so a slow database never holds dispatching. The writer thread takes everything
queued and writes it in as few transactions as it can: consecutive writes to Optuna's
tables and the service's events (user attributes, intermediate values, tells, enqueued
re-runs) share one transaction (``unit_of_work.py``, at most ``MAX_UNIT`` writes, so a
SQLite writer never holds the file long); a study's status change, written through the
service's own sessions, commits what precedes it first and is a transaction of its own.

Guarantees:

* **Order.** Writes land in the order they were queued, so a trial's attributes precede
  its tell, and a study's end follows the tells of all its trials (write-ahead order: a
  crash at any point leaves a prefix of the queue written; a trial whose tell was not
  written is still RUNNING in the database, and the next scheduler re-runs it).
* **Pruning sees every report.** Reports of studies with a pruner are not queued: the
  loop writes each and asks the pruner at once (``outcomes.py``), as a decision that came
  after a short trial ended would be no decision.
* **Nothing dropped on a database outage.** A unit that fails on a database error is
  rolled back whole and retried (so a retry is harmless); a write that fails for a reason
  of its own (the trial was finished meanwhile) rolls its unit back, which is then written
  again one write per transaction, where that write alone is logged and skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages._rdb import models as _optuna_models
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import StudyEvent
from service.scheduler.unit_of_work import backend_of, unit_of_work

om: Any = _optuna_models

RETRY_S = 0.5
MAX_BATCH = 500
MAX_UNIT = 64
"""Writes per transaction at most: a unit holds SQLite's single write lock (the loop's
``ask`` waits for it) for as long as it runs."""


@dataclass(frozen=True)
class _Rows:
    """Row writes that may share a transaction with their neighbours."""

    write: Callable[[Session], None]


@dataclass(frozen=True)
class _Call:
    """A write through Optuna's storage (a tell, an enqueue: ``joins``, it shares its
    neighbours' transaction) or through the service's own sessions (a status change)."""

    call: Callable[[], None]
    joins: bool = True


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


_Job = _Rows | _Call | _Flush


def _is_outage(err: BaseException) -> bool:
    """Whether ``err`` is the database being unreachable (retry), not a refused write."""
    while err is not None:
        if isinstance(err, DBAPIError) and (err.connection_invalidated or _transient(err)):
            return True
        err = err.__cause__  # type: ignore[assignment]
    return False


def _transient(err: DBAPIError) -> bool:
    text = str(err.orig).lower()
    return any(
        s in text
        for s in ("locked", "could not connect", "connection", "terminating", "server closed")
    )


class Recorder:
    """Queues the scheduler's writes and applies them on one thread, in order."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage
        self._backend = backend_of(storage)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self._abandoned = threading.Event()
        self.written = 0

    # --------------------------------------------------------------- queueing (loop)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="adamp-tune-recorder")
            self._thread.daemon = True
            self._thread.start()

    @property
    def backlog(self) -> int:
        """Writes queued and not yet written."""
        return self._pending

    def _put(self, job: _Job) -> None:
        with self._lock:
            self._pending += 1
        self._jobs.put(job)

    def rows(self, write: Callable[[Session], None]) -> None:
        """Queue row writes (they may share a transaction with the writes around them)."""
        self._put(_Rows(write))

    def call(self, call: Callable[[], None], *, joins: bool = True) -> None:
        """Queue a write through Optuna's storage, or (``joins=False``) one that opens a
        transaction of its own elsewhere; what was queued before it is committed first."""
        self._put(_Call(call, joins))

    def user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        backend, model = self._backend, om.TrialUserAttributeModel

        def write(session: Session) -> None:
            for key, value in attrs.items():
                backend._set_trial_attr_without_commit(session, model, trial_id, key, value)

        self.rows(write)

    def report(
        self,
        trial_id: int,
        step: int,
        value: float,
    ) -> None:
        """An intermediate value (of a study without a pruner: with one, the loop writes
        the report itself and asks the pruner at once)."""
        backend = self._backend
        self.rows(
            lambda s: backend._set_trial_intermediate_value_without_commit(s, trial_id, step, value)
        )

    def event(self, study_id: int, kind: str, message: str, data: dict[str, Any] | None) -> None:
        self.rows(
            lambda s: s.add(StudyEvent(study_id=study_id, kind=kind, message=message, data=data))
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; whether it was in time."""
        if self._thread is None:
            self._drain_all()
            return True
        done = threading.Event()
        self._put(_Flush(done))
        return done.wait(timeout)

    def abandon(self) -> int:
        """Stop writing for good and drop what is queued (this process lost the lease: the
        new holder re-runs the trials whose results were not written); returns how many
        writes were dropped."""
        self._abandoned.set()
        dropped = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Flush):
                job.done.set()
            else:
                dropped += 1
            self._done(1)
        return dropped

    # --------------------------------------------------------------- writing (thread)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _drain_all(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        unit: list[_Rows | _Call] = []
        for job in batch:
            if self._abandoned.is_set():
                if isinstance(job, _Flush):
                    job.done.set()
                self._done(1)
                continue
            if isinstance(job, _Rows) or (isinstance(job, _Call) and job.joins):
                unit.append(job)
                if len(unit) >= MAX_UNIT:
                    self._write_unit(unit)
                    unit = []
                continue
            self._write_unit(unit)
            unit = []
            if isinstance(job, _Flush):
                job.done.set()
            else:
                self._retrying(job.call)
            self._done(1)
        self._write_unit(unit)

    def _write_unit(self, jobs: list[_Rows | _Call]) -> None:
        if not jobs:
            return
        if self._abandoned.is_set():
            self._done(len(jobs))
            return
        storage = self._storage

        def together() -> None:
            with unit_of_work(storage) as session:
                for job in jobs:
                    _apply(job, session)

        if not self._retrying(together, skip_refused=False):
            for job in jobs:  # one of them was refused: write them one at a time

                def alone(job: _Rows | _Call = job) -> None:
                    with unit_of_work(storage) as session:
                        _apply(job, session)

                self._retrying(alone)
        self.written += len(jobs)
        self._done(len(jobs))

    def _retrying(self, write: Callable[[], None], *, skip_refused: bool = True) -> bool:
        """Run ``write`` until the database takes it; a refused write is logged and
        skipped (``True``) or reported (``False``) when ``skip_refused`` is off."""
        waited = False
        while True:
            try:
                write()
                return True
            except Exception as err:
                if _is_outage(err):
                    if not waited:
                        log.warning("the database did not take a write; retrying", exc_info=True)
                        waited = True
                    time.sleep(RETRY_S)
                    continue
                if not skip_refused:
                    return False
                log.warning("a write was refused and skipped: %s", err)
                return True


def _apply(job: _Rows | _Call, session: Session) -> None:
    if isinstance(job, _Rows):
        job.write(session)
    else:
        job.call()


log = logging.getLogger(__name__)
