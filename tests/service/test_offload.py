"""fANOVA and the plots run in a worker process at a lower priority, off the service's
interpreter lock; a worker that dies is replaced, and none is left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from service.offload import NICE, Offload


def _pid_and_nice() -> tuple[int, int]:
    return os.getpid(), os.nice(0)


def test_heavy_computations_run_in_a_lower_priority_process_that_is_replaced_if_it_dies() -> None:
    offload = Offload()
    try:
        pid, nice = offload.run(_pid_and_nice)
        assert pid != os.getpid(), "not in the service's process"
        assert nice == min(19, os.nice(0) + NICE)
        os.kill(pid, signal.SIGKILL)
        again, _ = offload.run(_pid_and_nice)
        assert again != pid, "a new worker answered"
    finally:
        offload.close()
    assert not psutil.pid_exists(again), "closing the app leaves no worker"


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_closing_stops_a_computation_under_way() -> None:
    offload = Offload()
    pid = offload.run(_pid_and_nice)[0]
    errors: list[BaseException] = []

    def wait_long() -> None:
        try:
            offload.run(_sleep, 600)
        except BaseException as err:
            errors.append(err)

    waiter = threading.Thread(target=wait_long)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    offload.close()
    waiter.join(timeout=30)
    assert time.monotonic() - started < 10, "the service's shutdown does not wait for it"
    assert not psutil.pid_exists(pid)
    assert errors, "whoever waited is told"
    assert isinstance(errors[0], RuntimeError), errors
    with pytest.raises(RuntimeError, match="stopping"):
        offload.run(_pid_and_nice)
