"""Heavy computations of reads (fANOVA importances, the dashboard's plots) in a process of
their own, at a lower CPU priority.

Why: they are pure-Python and numpy work that holds the interpreter lock of the process it
runs in, for seconds on a large study and about 50 s on a loaded 2-core machine; in the
service's process that lock is the one the scheduler's loop needs, so one importance
computation halved trial throughput however few requests asked for it
(``benchmarks/RESULTS.md``, issue 13). In a worker process they compete with the scheduler
and the trials only for cores, and at ``nice`` 10 the operating system gives those first.

One worker, so one computation at a time (the caches already ask for one at a time per
study); started on first use, with ``spawn`` (the service has threads, which ``fork`` would
copy mid-state), and stopped with the app. The worker opens the database itself from its URL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

import optuna

log = logging.getLogger(__name__)

NICE = 10
"""How much lower the worker's CPU priority is than the service's."""

T = TypeVar("T")


def _lower_priority() -> None:
    try:
        os.nice(NICE)
    except OSError:  # not allowed here: still off the service's interpreter lock
        log.debug("cannot lower the offload worker's priority", exc_info=True)


class Offload:
    """Runs module-level functions in the worker process; ``run`` blocks until done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the service is stopping")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=get_context("spawn"), initializer=_lower_priority
                )
            return self._pool

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker; a worker that died (killed, out of memory) is
        replaced once."""
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return pool.submit(fn, *args).result()
            except BrokenProcessPool:
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the worker at once, even mid-computation (a fANOVA can take a minute, longer
        than the service's shutdown grace); whoever waited on it gets an error."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is None:
            return
        # Python 3.11's executor cannot terminate its workers; its process table can.
        workers = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}
"""The worker's Optuna storages, one per database URL, kept between computations."""


def storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage on ``url`` in the worker, opened once."""
    from service.optuna_glue import storage_for  # noqa: PLC0415 - in the worker only

    if url not in _STORAGES:
        _STORAGES[url] = storage_for(url)
    return _STORAGES[url]
