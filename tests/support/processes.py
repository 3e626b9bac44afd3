"""Starting and stopping the test's own processes (never anyone else's)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import psutil


def kill_tree(
    proc: subprocess.Popen[bytes],
    grace_s: float = 5.0,
    sig: int = signal.SIGTERM,
    root_first_s: float = 0.0,
) -> None:
    """Signal ``proc`` and every process it started, then SIGKILL whatever outlives ``grace_s``.

    The tree is collected before the first signal, because children of a dead parent are
    re-parented and could no longer be found from it. With ``root_first_s``, ``proc`` alone
    is signalled first and given that long to stop its children itself: a service with a
    local Ray stops it in about 2 s that way, but waits 5 s more on a Ray whose processes
    were signalled at the same time.
    """
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if tree and root_first_s > 0:
        with contextlib.suppress(psutil.NoSuchProcess):
            root.send_signal(sig)
        psutil.wait_procs([root], timeout=root_first_s)
        tree = [p for p in tree if p.is_running()]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


def wait_until(
    predicate: object, timeout_s: float, interval_s: float = 0.2, what: str = ""
) -> None:
    """Poll ``predicate()`` until it is true; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what or predicate}")
