"""How often heavy reads of a study (the dashboard's plots, parameter importances, large
pages of trials) are recomputed: bounded by what they cost.

Optuna's plots read every trial: on a study of 10,000 trials one recomputation takes seconds
(7.6 s for the fast half on the 2-core CI machine, ``benchmarks/results/scale.md``). Keyed on
the trial counts alone, a dashboard open on a running study would recompute them on every
finished trial, which keeps the service (and the scheduler sharing its CPUs) busy for as
long as the page stays open.

So while a study runs, plots computed less than ``max(min_refresh_s, cost_factor * cost)``
ago are served as they are, marked stale, even if trials finished since: the share of time
the service spends on a study's plots stays under ``1 / cost_factor`` however many pages
are open (they share the cache, and one computation runs at a time), and small studies,
whose plots are cheap, still refresh every ``min_refresh_s``. Once the study stops running, new
counts are recomputed at once, so the final plots are exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

MIN_REFRESH_S = 2.0
"""Shortest interval between two recomputations of a running study's plots."""
COST_FACTOR = 5.0
"""A running study's plots are recomputed at most once per this many times their cost."""
MAX_ENTRIES = 64
"""Plots kept (one entry per study and plot group); the oldest go first."""


T = TypeVar("T")


@dataclass
class _Entry:
    counts: Hashable
    computed_at: float
    cost_s: float
    result: Any


class PlotCache:
    """The latest plots of each (study, group), and when to recompute them."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_s: float = MIN_REFRESH_S,
        cost_factor: float = COST_FACTOR,
    ) -> None:
        self._clock = clock
        self._min_refresh_s = min_refresh_s
        self._cost_factor = cost_factor
        self._entries: dict[Hashable, _Entry] = {}
        # One computation at a time: pages asking together wait for it and share it
        # (plots are CPU-bound Python: two at once would only take turns on the GIL).
        self._lock = threading.Lock()

    def fetch(
        self,
        key: Hashable,
        counts: Hashable,
        running: bool,
        compute: Callable[[], T],
    ) -> tuple[T, bool, float]:
        """``(answer, stale, age_s)`` for ``key``: cached if ``counts`` are those it was
        computed at, or if the study is ``running`` and it is recent for its cost (then
        ``stale``); else computed now."""
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None:
                age = now - entry.computed_at
                if entry.counts == counts:
                    return entry.result, False, round(age, 1)
                if running and age < max(self._min_refresh_s, self._cost_factor * entry.cost_s):
                    return entry.result, True, round(age, 1)
            result = compute()
            done = self._clock()
            self._entries.pop(key, None)
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = _Entry(counts, done, done - now, result)
            return result, False, 0.0

    def get(
        self,
        key: Hashable,
        counts: Hashable,
        running: bool,
        compute: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        """``fetch`` for a JSON object, with ``stale`` and ``age_s`` added to it."""
        result, stale, age = self.fetch(key, counts, running, compute)
        return {**result, "stale": stale, "age_s": age}
