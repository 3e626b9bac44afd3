"""Who gets the free slots: a pure function from a snapshot to starts and preemptions.

No I/O, no clock, no threads: the loop builds a ``Snapshot`` (the studies that want
trials, the trials running, the free CPUs and GPUs, who was served when, the per-user
limits) and carries out the ``Decision`` (``decide``). The rules, in order:

1. **Priority**: a higher-priority study is served before any lower one, while its trials
   fit. Lower priorities take what is left (back-filling), never what a higher one could use.
2. **Turns between users**: within a priority, free slots go to users in turn, the user
   served longest ago first, so one user's large study cannot starve another's small one.
3. **Shortest remaining first** within a user: the study with the fewest trials left to
   finish takes the slot (the oldest on a tie), which minimises the mean time a user waits.
4. **Limits**: a user's running trials never hold more than ``max_gpus_per_user`` GPUs, nor
   exceed their limit of trials in flight; a study never exceeds what it may start
   (``max_concurrent``, ``n_trials``, waiting re-runs).
5. **Preemption**: a GPU study that still cannot start a trial because lower-priority GPU
   trials hold what it needs has enough of those trials named for preemption (lowest
   priority first, the most recently started first: the least work lost). Trials already
   stopping count as capacity coming free, so nothing is preempted twice for one start.
   Within one priority nothing is preempted; nothing is preempted unless it lets a trial
   start; the loop marks trials not ``preemptible`` (preempted too often, or a workload
   that does not checkpoint when the settings say so).

Capacity is summed over the cluster (as Ray places the trials), not per node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """A study that may start trials now."""

    study_id: int
    owner: str
    priority: int
    cpus: float
    gpus: float
    startable: int
    """How many trials it may start now (room under ``max_concurrent``, trials left)."""
    remaining: int
    """Trials left to finish (shortest-remaining-first)."""
    age: tuple[float, int] = (0.0, 0)
    """Tie-breaker: (submission time, id), the older first."""


@dataclass(frozen=True)
class Holder:
    """A running trial, as far as the policy cares."""

    key: int
    study_id: int
    owner: str
    priority: int
    cpus: float
    gpus: float
    started: float = 0.0
    preemptible: bool = True
    stopping: bool = False
    """Asked to stop already: its resources are coming free."""


@dataclass(frozen=True)
class Snapshot:
    demands: Sequence[Demand]
    running: Sequence[Holder] = ()
    free_cpus: float = 0.0
    free_gpus: float = 0.0
    served: Mapping[str, int] = field(default_factory=dict)
    """User -> the serve count when they were last given a slot (0: never)."""
    serves: int = 0
    max_gpus_per_user: float | None = None
    trial_limits: Mapping[str, int | None] = field(default_factory=dict)
    """User -> trials in flight at most (``""``: anyone not listed; ``None``: no limit)."""


@dataclass
class Decision:
    starts: list[int] = field(default_factory=list)
    """Study ids, one per trial to start, in order."""
    preempt: list[int] = field(default_factory=list)
    """``Holder.key`` of the trials to stop and re-queue."""
    served: dict[str, int] = field(default_factory=dict)
    serves: int = 0


@dataclass
class _Books:
    """Running totals while deciding: free capacity and what each user holds."""

    cpus: float
    gpus: float
    gpus_by_user: dict[str, float]
    trials_by_user: dict[str, int]
    snap: Snapshot

    def fits(self, d: Demand) -> bool:
        return d.cpus <= self.cpus + EPS and d.gpus <= self.gpus + EPS

    def within_limits(self, d: Demand) -> bool:
        held = self.gpus_by_user.get(d.owner, 0.0)
        cap = self.snap.max_gpus_per_user
        if d.gpus and cap is not None and held + d.gpus > cap + EPS:
            return False
        limits = self.snap.trial_limits
        limit = limits[d.owner] if d.owner in limits else limits.get("")
        return limit is None or self.trials_by_user.get(d.owner, 0) < limit

    def take(self, d: Demand) -> None:
        self.cpus -= d.cpus
        self.gpus -= d.gpus
        self.gpus_by_user[d.owner] = self.gpus_by_user.get(d.owner, 0.0) + d.gpus
        self.trials_by_user[d.owner] = self.trials_by_user.get(d.owner, 0) + 1


def decide(snap: Snapshot) -> Decision:
    """The trials to start and the trials to preempt, by the rules of this module."""
    books = _Books(snap.free_cpus, snap.free_gpus, {}, {}, snap)
    for h in snap.running:
        books.gpus_by_user[h.owner] = books.gpus_by_user.get(h.owner, 0.0) + h.gpus
        books.trials_by_user[h.owner] = books.trials_by_user.get(h.owner, 0) + 1
    decision = Decision(served=dict(snap.served), serves=snap.serves)
    left = {d.study_id: d.startable for d in snap.demands}
    tiers: dict[int, dict[str, list[Demand]]] = {}
    for d in sorted(snap.demands, key=lambda d: (d.remaining, d.age, d.study_id)):
        if d.startable > 0:
            tiers.setdefault(d.priority, {}).setdefault(d.owner, []).append(d)
    for priority in sorted(tiers, reverse=True):
        _serve_tier(tiers[priority], books, left, decision)
    decision.preempt = _preemptions(snap, tiers, books, left)
    return decision


def _serve_tier(
    by_user: dict[str, list[Demand]], books: _Books, left: dict[int, int], decision: Decision
) -> None:
    """Start what fits of one priority, users in turns, shortest remaining first."""
    progress = True
    while progress:
        progress = False
        for owner in sorted(by_user, key=lambda u: (decision.served.get(u, 0), u)):
            for d in by_user[owner]:
                if left[d.study_id] <= 0 or not books.fits(d) or not books.within_limits(d):
                    continue
                books.take(d)
                left[d.study_id] -= 1
                decision.starts.append(d.study_id)
                decision.serves += 1
                decision.served[owner] = decision.serves
                progress = True
                break


def _preemptions(
    snap: Snapshot, tiers: dict[int, dict[str, list[Demand]]], books: _Books, left: dict[int, int]
) -> list[int]:
    """Lower-priority trials to stop so that blocked higher-priority trials can start."""
    coming_cpus = sum(h.cpus for h in snap.running if h.stopping)
    coming_gpus = sum(h.gpus for h in snap.running if h.stopping)
    cpus, gpus = books.cpus + coming_cpus, books.gpus + coming_gpus
    candidates = sorted(
        (h for h in snap.running if h.preemptible and not h.stopping and h.gpus > 0),
        key=lambda h: (h.priority, -h.started, h.key),
    )
    chosen: list[int] = []
    for priority in sorted(tiers, reverse=True):
        for owner in sorted(tiers[priority], key=lambda u: (snap.served.get(u, 0), u)):
            for d in tiers[priority][owner]:
                while d.gpus > 0 and left[d.study_id] > 0 and books.within_limits(d):
                    need_cpus, need_gpus = d.cpus - cpus, d.gpus - gpus
                    victims: list[Holder] = []
                    for h in candidates:
                        if need_cpus <= EPS and need_gpus <= EPS:
                            break
                        if h.priority < priority:
                            victims.append(h)
                            need_cpus -= h.cpus
                            need_gpus -= h.gpus
                    if need_cpus > EPS or need_gpus > EPS:
                        break  # even preempting every lower trial would not make room
                    for h in victims:
                        candidates.remove(h)
                        chosen.append(h.key)
                        cpus += h.cpus
                        gpus += h.gpus
                    cpus -= d.cpus
                    gpus -= d.gpus
                    books.take(d)  # count it against the user's limits while deciding
                    left[d.study_id] -= 1
    return chosen
