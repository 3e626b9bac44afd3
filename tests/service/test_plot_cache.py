"""The dashboard's plots of a running study are recomputed at most once per a few times
their cost; a finished study's are exact."""

from __future__ import annotations

import threading
import time
from typing import Any

from service.plot_cache import PlotCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plots(clock: Clock, cost_s: float) -> tuple[list[int], Any]:
    """A compute function that takes ``cost_s`` on ``clock`` and counts its calls."""
    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        clock.now += cost_s
        return {"n_complete": len(calls), "plots": []}

    return calls, compute


def test_unchanged_counts_are_served_from_the_cache() -> None:
    clock = Clock()
    cache = PlotCache(clock=clock)
    calls, compute = _plots(clock, cost_s=0.5)
    first = cache.get((1, "fast"), counts=(10, 0, 0, 2), running=True, compute=compute)
    clock.now += 100
    again = cache.get((1, "fast"), counts=(10, 0, 0, 2), running=True, compute=compute)
    assert len(calls) == 1
    assert first["stale"] is False
    assert again["stale"] is False
    assert again["age_s"] == 100.0


def test_a_running_study_is_recomputed_once_per_five_times_the_cost() -> None:
    """An 8 s computation (a 10,000-trial study): new trials within 40 s get the old plots,
    marked stale; after that they are recomputed."""
    clock = Clock()
    cache = PlotCache(clock=clock)
    calls, compute = _plots(clock, cost_s=8.0)
    cache.get((1, "fast"), counts=(10_000, 0, 0, 2), running=True, compute=compute)
    clock.now += 39
    stale = cache.get((1, "fast"), counts=(10_050, 0, 0, 2), running=True, compute=compute)
    assert len(calls) == 1
    assert stale["stale"] is True
    assert stale["age_s"] == 39.0
    assert stale["n_complete"] == 1  # the cached result, as computed
    clock.now += 2
    fresh = cache.get((1, "fast"), counts=(10_060, 0, 0, 2), running=True, compute=compute)
    assert len(calls) == 2
    assert fresh["stale"] is False
    assert fresh["n_complete"] == 2


def test_cheap_plots_still_wait_the_minimum_interval() -> None:
    clock = Clock()
    cache = PlotCache(clock=clock, min_refresh_s=2.0)
    calls, compute = _plots(clock, cost_s=0.01)
    cache.get((1, "slow"), counts=(5, 0, 0, 1), running=True, compute=compute)
    clock.now += 1.0
    assert cache.get((1, "slow"), counts=(6, 0, 0, 1), running=True, compute=compute)["stale"]
    clock.now += 1.5
    assert not cache.get((1, "slow"), counts=(7, 0, 0, 1), running=True, compute=compute)["stale"]
    assert len(calls) == 2


def test_a_study_that_stopped_running_gets_exact_plots_at_once() -> None:
    clock = Clock()
    cache = PlotCache(clock=clock)
    calls, compute = _plots(clock, cost_s=8.0)
    cache.get((1, "fast"), counts=(9_998, 0, 0, 2), running=True, compute=compute)
    clock.now += 1
    final = cache.get((1, "fast"), counts=(10_000, 0, 0, 0), running=False, compute=compute)
    assert len(calls) == 2
    assert final["stale"] is False


def test_studies_and_groups_are_cached_apart() -> None:
    clock = Clock()
    cache = PlotCache(clock=clock)
    calls, compute = _plots(clock, cost_s=1.0)
    for key in [(1, "fast"), (1, "slow"), (2, "fast")]:
        cache.get(key, counts=(3, 0, 0, 0), running=False, compute=compute)
    assert len(calls) == 3
    cache.get((2, "fast"), counts=(3, 0, 0, 0), running=False, compute=compute)
    assert len(calls) == 3


def test_pages_asking_together_share_one_computation() -> None:
    """Two dashboards opened on the same big study at once: the second waits for the first
    computation instead of running its own."""
    cache = PlotCache()
    started = threading.Event()
    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return {"n_complete": 7, "plots": []}

    results: list[dict[str, Any]] = []
    first = threading.Thread(
        target=lambda: results.append(cache.get((1, "fast"), (7, 0, 0, 0), False, compute))
    )
    first.start()
    started.wait(5)
    results.append(cache.get((1, "fast"), (7, 0, 0, 0), False, compute))
    first.join(5)
    assert len(calls) == 1
    assert [r["n_complete"] for r in results] == [7, 7]
