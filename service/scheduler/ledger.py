"""A study's trial counts: one definition, changed in one place, read by everyone.

``Counts`` says which trials count as what: a trial that ended for good (complete, pruned,
or failed and not re-run) is *finished*; a failed trial that was re-run (user attribute
``retried``, also set on a preempted trial) is *retried* and frees its slot for the re-run;
a re-run not started yet is *waiting*. ``Counts.of_trial`` is that rule, and both the
scheduler (from Optuna's trials when it takes a study over) and the API (from SQL over
Optuna's tables, ``service.trial_queries.ledger_counts``) build their counts with it.

``Ledger`` is the scheduler's only writer of counts: its methods are the trial events
(started, ended, re-queued), and nothing else changes a study's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Ending = Literal["complete", "pruned", "failed", "raised", "retried"]
"""How a trial attempt ended, for the ledger: ``retried`` ended it without using its slot
(worker died, shutdown, preemption: the same parameters run again)."""


@dataclass
class Counts:
    """One study's trials, by what they count as."""

    running: int = 0
    waiting: int = 0
    """Re-runs enqueued and not started yet."""
    finished: int = 0
    """Ended for good: complete, pruned, or failed without a re-run."""
    succeeded: int = 0
    """Complete or pruned."""
    failed: int = 0
    """Failed for good (whatever the reason)."""
    raised: int = 0
    """Failed because the workload raised (a subset of ``failed``)."""
    retried: int = 0
    """Attempts that ended and were re-run (not finished: their slot went to the re-run)."""

    @property
    def used_slots(self) -> int:
        """Trial slots of ``n_trials`` taken: finished, running, or waiting to re-run."""
        return self.finished + self.running + self.waiting

    def to_start(self, target: int) -> int:
        """Trials not started yet: waiting re-runs and slots never used."""
        return self.waiting + max(0, target - self.used_slots)

    def add_trial(self, state: str, *, retried: bool, raised: bool, n: int = 1) -> None:
        """Count ``n`` stored trials (``state`` in Optuna's lower-case names)."""
        match state:
            case "complete" | "pruned":
                self.finished += n
                self.succeeded += n
            case "fail" if retried:
                self.retried += n
            case "fail":
                self.finished += n
                self.failed += n
                self.raised += n if raised else 0
            case "waiting":
                self.waiting += n
            case "running":
                self.running += n

    @staticmethod
    def is_raised(user_attrs: dict[str, object]) -> bool:
        """A failed trial whose workload raised: it has an error and no stop reason."""
        return bool(user_attrs.get("error")) and not user_attrs.get("stop_reason")


@dataclass
class Ledger:
    """The scheduler's counts of every study it drives, changed only by trial events."""

    _counts: dict[int, Counts] = field(default_factory=dict)
    _running: dict[int, set[int]] = field(default_factory=dict)

    def open(self, study_id: int, counts: Counts) -> Counts:
        """Start keeping ``study_id``'s counts (read from its stored trials); its running
        trials are not counted: the scheduler re-runs a new holder's orphans."""
        counts.running = 0
        self._counts[study_id] = counts
        self._running[study_id] = set()
        return counts

    def close(self, study_id: int) -> None:
        self._counts.pop(study_id, None)
        self._running.pop(study_id, None)

    def counts(self, study_id: int) -> Counts:
        return self._counts[study_id]

    def running(self, study_id: int) -> frozenset[int]:
        """Numbers of the study's trials running now."""
        return frozenset(self._running.get(study_id, ()))

    def started(self, study_id: int, number: int, *, rerun: bool) -> None:
        """A trial was submitted (``rerun``: it was a waiting re-run)."""
        counts = self._counts[study_id]
        self._running[study_id].add(number)
        counts.running = len(self._running[study_id])
        if rerun:
            counts.waiting = max(0, counts.waiting - 1)

    def ended(self, study_id: int, number: int, ending: Ending) -> None:
        """A trial attempt ended (a ``retried`` one is re-queued by ``requeued``)."""
        counts = self._counts.get(study_id)
        if counts is None:
            return
        running = self._running[study_id]
        running.discard(number)
        counts.running = len(running)
        if ending == "retried":
            counts.retried += 1
            return
        counts.finished += 1
        if ending in ("complete", "pruned"):
            counts.succeeded += 1
        else:
            counts.failed += 1
            counts.raised += int(ending == "raised")

    def requeued(self, study_id: int) -> None:
        """A re-run of an ended attempt was enqueued."""
        if study_id in self._counts:
            self._counts[study_id].waiting += 1

    def waiting_failed(self, study_id: int, n: int) -> None:
        """``n`` waiting re-runs will never start (the study ended): failed for good."""
        counts = self._counts[study_id]
        counts.waiting = max(0, counts.waiting - n)
        counts.finished += n
        counts.failed += n


def counts_of(rows: list[tuple[str, bool, bool, int]]) -> Counts:
    """Counts from ``service.trial_queries.ledger_rows`` (the API's view of the ledger)."""
    counts = Counts()
    for state, retried, raised, n in rows:
        counts.add_trial(state, retried=retried, raised=raised, n=n)
    return counts
