"""How long does a cancel take to free a study's CPUs while other studies keep the service busy?

    python -m benchmarks.cancel_under_load [--busy-studies 3] [--repeats 3]

Starts ``adamp-tune serve`` (SQLite, a local Ray of 4 CPUs) with ``--busy-studies`` TPE
studies of cheap trials that keep the scheduler asking and telling without pause, then,
``--repeats`` times, submits a study of two trials that never report (one step of an
hour), waits until both run, cancels it and measures until the study shows no running
trial and the cluster has its two CPUs back. Prints a markdown table (issue 13's goal:
within seconds, whatever the load).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.harness import running_service, submit, synthetic_study


def _wait(predicate: object, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(what)
        time.sleep(0.1)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-studies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_service(Path(tmp), ray_num_cpus="4") as url:
        api = httpx.Client(base_url=url, timeout=60)
        busy = [
            submit(
                api,
                synthetic_study(
                    f"busy-{i}", 100_000, sampler="tpe", max_concurrent=1, fixed={"steps": 1}
                ),
            )["id"]
            for i in range(args.busy_studies)
        ]
        freed: list[float] = []
        for r in range(args.repeats):
            body = synthetic_study(
                f"stuck-{r}", 2, max_concurrent=2, priority=10, fixed={"steps": 1, "sleep_s": 3600}
            )
            sid = submit(api, body)["id"]

            def running(sid: int = sid) -> int:
                return int(api.get(f"/api/v1/studies/{sid}").json()["counts"]["running"])

            _wait(lambda running=running: running() == 2, 120, "two stuck trials running")
            started = time.monotonic()
            api.post(f"/api/v1/studies/{sid}/cancel").raise_for_status()
            _wait(lambda running=running: running() == 0, 120, "the cancel to stop them")
            freed.append(time.monotonic() - started)
        for sid in busy:
            api.post(f"/api/v1/studies/{sid}/cancel")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print("| busy studies | cancels | seconds to stop both trials (median, max) |")
    print("|---|---|---|")
    print(
        f"| {args.busy_studies} | {len(freed)} | {statistics.median(freed):.1f}, {max(freed):.1f} |"
    )


if __name__ == "__main__":
    main()
