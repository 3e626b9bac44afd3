"""Do expensive reads slow the scheduler? Trial throughput with and without heavy readers.

    python -m benchmarks.heavy_readers [--readers 20] [--users 1] [--window-s 60]
                                       [--warm-trials 400]

Starts ``adamp-tune serve`` (SQLite, a 2-CPU local Ray), runs one long study of cheap
trials until it has ``--warm-trials`` complete, then counts the trials it completes in a
window with no reader, and in a window of the same length while ``--readers`` clients ask
without pause for what costs the service most: the study's parameter importances, its
plots and pages of 1,000 trials. Prints a markdown row; the goal (issue 13) is a
throughput at most 10% lower with the readers.

The readers behave as a well-behaved client of a shared service: refused with ``429``
(the service's rate limits), they wait ``Retry-After`` seconds. With ``--users 1`` (the
default) the service runs without auth and every reader is the same caller (one address);
with ``--users N`` auth is on and the readers are spread over N users' tokens, so the
per-user limits do not hold them back and the service-wide budget of heavy reads does.

``ADAMP_TUNE_BENCH_SOURCE=/path/to/an/older/checkout`` runs that checkout's service instead
(put first on its ``PYTHONPATH``), for a before/after comparison on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import make_tokens, running_service, submit, synthetic_study


def _get(api: httpx.Client, path: str) -> httpx.Response:
    """``GET path``, waiting out 429s (``Retry-After``) as a well-behaved client does."""
    while True:
        answer = api.get(path)
        if answer.status_code != 429:
            return answer
        time.sleep(float(answer.headers.get("retry-after", "1")))


def _complete(api: httpx.Client, sid: int) -> int:
    answer = _get(api, f"/api/v1/studies/{sid}").raise_for_status()
    return int(answer.json()["counts"]["complete"])


def _reader(
    api: httpx.Client, sid: int, stop: threading.Event, stats: dict[str, list[float]]
) -> None:
    paths = [
        f"/api/v1/studies/{sid}/importance",
        f"/dashboard-api/studies/{sid}/plots",
        f"/api/v1/studies/{sid}/trials?limit=1000",
    ]
    with api:
        i = 0
        while not stop.is_set():
            path = paths[i % len(paths)]
            started = time.monotonic()
            answer = api.get(path)
            if answer.status_code == 429:
                stats.setdefault("429", []).append(0.0)
                stop.wait(float(answer.headers.get("retry-after", "1")))
                continue
            stats.setdefault(path.split("?")[0].rsplit("/", 1)[-1], []).append(
                time.monotonic() - started
            )
            i += 1


def _window(api: httpx.Client, sid: int, seconds: float) -> float:
    """Trials completed per second over ``seconds``."""
    first, started = _complete(api, sid), time.monotonic()
    time.sleep(seconds)
    return (_complete(api, sid) - first) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument(
        "--users", type=int, default=1, help="spread the readers over this many users' tokens"
    )
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--warm-trials", type=int, default=400)
    args = parser.parse_args()
    source = os.environ.get("ADAMP_TUNE_BENCH_SOURCE")
    if source:
        os.environ["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory() as tmp:
        users = [f"reader{u}" for u in range(args.users)]
        tokens = make_tokens(Path(tmp), ["watcher", *users], admins=1) if args.users > 1 else {}
        settings = {"auth": "required"} if tokens else {}
        with running_service(Path(tmp), **settings) as url:
            row = _measure(url, tokens, users, args)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(v) for v in row.values()) + " |")


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, timeout=600, headers=headers)


def _measure(
    url: str, tokens: dict[str, str], users: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Run the study, the quiet window and the busy one; the row to print."""
    source = os.environ.get("ADAMP_TUNE_BENCH_SOURCE")
    api = _client(url, tokens.get("watcher"))
    body = synthetic_study("heavy-readers", 100_000, fixed={"steps": 2, "sleep_s": 0.05})
    body["search_space"] = {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "delta": {"low": 0.01, "high": 1.0, "log": True},
        "wd_ratio": {"low": 0.0, "high": 1.0},
    }
    sid = submit(api, body)["id"]
    while _complete(api, sid) < args.warm_trials:
        time.sleep(1.0)
    quiet = _window(api, sid, args.window_s)
    stop = threading.Event()
    stats: dict[str, list[float]] = {}
    readers = [
        threading.Thread(
            target=_reader,
            args=(_client(url, tokens.get(users[r % len(users)])), sid, stop, stats),
            daemon=True,
        )
        for r in range(args.readers)
    ]
    for reader in readers:
        reader.start()
    busy = _window(api, sid, args.window_s)
    stop.set()
    for reader in readers:
        reader.join(timeout=900)
    n_complete = _complete(api, sid)
    api.post(f"/api/v1/studies/{sid}/cancel")

    def median(values: list[float]) -> str:
        return f"{sorted(values)[len(values) // 2]:.2f} s ({len(values)})" if values else "-"

    return {
        "code": source or "this checkout",
        "users": args.users,
        "trials/s alone": f"{quiet:.2f}",
        f"trials/s with {args.readers} readers": f"{busy:.2f}",
        "change": f"{(busy / quiet - 1) * 100:+.0f}%" if quiet else "-",
        "importance median (n)": median(stats.get("importance", [])),
        "plots median (n)": median(stats.get("plots", [])),
        "page of 1000 median (n)": median(stats.get("trials", [])),
        "429s (readers)": len(stats.get("429", [])),
        "trials at the end": n_complete,
    }


if __name__ == "__main__":
    main()
