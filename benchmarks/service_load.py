"""Load, latency, fairness and soak measurements of the tuning service, as users drive it.

    python -m benchmarks.service_load overhead [--trials 200]
    python -m benchmarks.service_load api --db sqlite|postgres [--trials 5000 --clients 50]
    python -m benchmarks.service_load fairness
    python -m benchmarks.service_load soak [--trials 2000 --studies 20 --kill-every 10]

Each run starts ``adamp-tune serve`` in its own process with the embedded local Ray limited
to 2 CPUs (as on the project's 2-core machines), talks to it over HTTP only, prints a
markdown table and stops everything it started. ``postgres`` runs use a fresh database on
``ADAMP_TUNE_BENCH_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``
as the admin connection).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.harness import (
    make_tokens,
    postgres_database,
    running_service,
    soak_with_kills,
    submit,
    synthetic_study,
    trials_of,
    wait_all,
)


def _when(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# --- overhead ---------------------------------------------------------------------------


def bench_overhead(args: argparse.Namespace) -> None:
    """Service overhead per trial: wall time minus the objective's own time, per trial."""
    sleep_s, steps = args.sleep_s, 3
    with tempfile.TemporaryDirectory() as tmp, running_service(Path(tmp)) as url:
        api = httpx.Client(base_url=url, timeout=30)
        body = synthetic_study("overhead", args.trials, fixed={"steps": steps, "sleep_s": sleep_s})
        start = time.monotonic()
        study = submit(api, body)
        final = wait_all(api, [study["id"]], timeout_s=3600)[study["id"]]
        wall = time.monotonic() - start
        trials = trials_of(api, study["id"])
    complete = [t for t in trials if t["state"] == "complete"]
    objective = len(complete) * steps * sleep_s / body["max_concurrent"]
    per_trial = (wall - objective) / len(complete) * 1e3
    durations = [t["duration_s"] for t in complete if t["duration_s"] is not None]
    print(
        "| trials | slots | objective s/trial | wall s | overhead ms/trial | trial p50 ms |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(complete)} ({final['status']}) | {body['max_concurrent']} | "
        f"{steps * sleep_s:.2f} | {wall:.1f} | {per_trial:.1f} | "
        f"{statistics.median(durations) * 1e3:.0f} |"
    )


# --- API latency ------------------------------------------------------------------------


async def _hammer(
    url: str, paths: list[str], clients: int, requests_per_client: int, think_s: float
) -> tuple[dict[str, list[float]], float]:
    """``clients`` concurrent clients, each sending ``requests_per_client`` requests with
    ``think_s`` (jittered ±50%) between them; returns latencies per path and requests/s."""
    latencies: dict[str, list[float]] = defaultdict(list)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client(i: int) -> None:
            rng = random.Random(i)
            await asyncio.sleep(rng.uniform(0, think_s))
            for k in range(requests_per_client):
                if k and think_s:
                    await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
                path = paths[(i + k) % len(paths)]
                start = time.perf_counter()
                answer = await client.get(path)
                latencies[path].append((time.perf_counter() - start) * 1e3)
                answer.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        rate = clients * requests_per_client / (time.perf_counter() - start)
    return latencies, rate


def bench_api(args: argparse.Namespace) -> None:
    """p50/p99 of the study and trial-list endpoints on a large study under many clients."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db_url = stack.enter_context(postgres_database()) if args.db == "postgres" else None
        url = stack.enter_context(running_service(tmp, db_url))
        api = httpx.Client(base_url=url, timeout=60)
        start = time.monotonic()
        study = submit(
            api,
            synthetic_study("api-latency", args.trials, max_concurrent=4, resources={"cpus": 0.5}),
        )
        final = wait_all(api, [study["id"]], timeout_s=7200)[study["id"]]
        filled = time.monotonic() - start
        sid = study["id"]
        paths = [f"/api/v1/studies/{sid}", f"/api/v1/studies/{sid}/trials?limit=100"]
        pages = dashboard_timings(url, sid)
        asyncio.run(_hammer(url, paths, args.clients, 2, 0.0))  # warm-up
        runs = [
            (think, *asyncio.run(_hammer(url, paths, args.clients, args.requests, think)))
            for think in (args.think_s, 0.0)
        ]
    print(
        f"{args.db}: study of {final['counts']['complete']} complete trials "
        f"(filled in {filled:.0f} s); {args.clients} concurrent clients\n"
    )
    print("\nDashboard study page in headless Chromium, same study (one load each):\n")
    print("| milestone | s after navigation |\n|---|---:|")
    for milestone, seconds in pages.items():
        print(f"| {milestone} | {seconds:.2f} |")
    print(
        "\n| clients wait between requests | endpoint | requests | req/s (all) | p50 ms "
        "| p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|"
    )
    for think, latencies, rate in runs:
        mode = f"{think:g} s (±50%)" if think else "no wait (saturation)"
        for path, values in latencies.items():
            values.sort()
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
            label = path.replace(f"/studies/{sid}", "/studies/{id}")
            print(
                f"| {mode} | `GET {label}` | {len(values)} | {rate:.0f} | "
                f"{statistics.median(values):.1f} | {p99:.1f} | {values[-1]:.1f} |"
            )


def dashboard_timings(url: str, sid: int) -> dict[str, float]:
    """Seconds from navigation to each milestone of the study page (Debian's Chromium)."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this benchmark

    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(f"{url}/studies/{sid}", wait_until="commit")
        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
        out["first contentful paint"] = page.evaluate(
            "performance.getEntriesByName('first-contentful-paint')[0].startTime / 1000"
        )
        page.wait_for_function("document.getElementById('study-name').textContent !== '…'")
        out["study summary shown"] = time.perf_counter() - start
        page.wait_for_selector("#trials tbody tr")
        out["trials table filled"] = time.perf_counter() - start
        page.wait_for_selector("#plots .js-plotly-plot", timeout=300_000)
        out["first plot drawn"] = time.perf_counter() - start
        page.wait_for_function(
            "document.getElementById('plots').dataset.nComplete !== undefined", timeout=600_000
        )
        out["all plots drawn (importances, contours)"] = time.perf_counter() - start
        browser.close()
    return out


# --- fairness ---------------------------------------------------------------------------


def bench_fairness(args: argparse.Namespace) -> None:
    """4 users submit 5 studies each at once; who gets the 2 slots, and who finishes first."""
    users = ["ana", "ben", "chen", "dara"]
    sizes = [4, 8, 16, 32, 64] if args.sizes is None else args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tokens = make_tokens(workdir, users)
        with running_service(workdir, AUTH="required") as url:
            ids: dict[int, tuple[str, int]] = {}
            order = [(u, s) for s in sizes for u in users]
            random.Random(0).shuffle(order)
            for user, size in order:
                api = httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {tokens[user]}"}
                )
                body = synthetic_study(
                    f"{user}-{size}", size, fixed={"steps": 2, "sleep_s": args.sleep_s}
                )
                ids[submit(api, body)["id"]] = (user, size)
            admin = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {tokens[users[0]]}"}
            )
            final = wait_all(admin, list(ids), timeout_s=7200)
            trials = {sid: trials_of(admin, sid) for sid in ids}
    t0 = min(_when(s["started_at"]) for s in final.values() if s["started_at"])
    print("Finish time of each study (s after the first start), by size:\n")
    print("| size | " + " | ".join(users) + " |\n|---:|" + "---:|" * len(users))
    for size in sizes:
        cells = []
        for user in users:
            sid = next(k for k, v in ids.items() if v == (user, size))
            cells.append(f"{_when(final[sid]['finished_at']) - t0:.1f}")
        print(f"| {size} | " + " | ".join(cells) + " |")
    end = max(_when(s["finished_at"]) for s in final.values())
    windows = 6
    width = (end - t0) / windows
    share: dict[str, list[float]] = {u: [0.0] * windows for u in users}
    for sid, items in trials.items():
        user = ids[sid][0]
        for t in items:
            if not (t["datetime_start"] and t["datetime_complete"]):
                continue
            a, b = _when(t["datetime_start"]) - t0, _when(t["datetime_complete"]) - t0
            for w in range(windows):
                lo, hi = w * width, (w + 1) * width
                share[user][w] += max(0.0, min(b, hi) - max(a, lo))
    print("\nEach user's share of the busy slot-seconds, per sixth of the run:\n")
    heads = [f"{w * width:.0f}-{(w + 1) * width:.0f} s" for w in range(windows)]
    print("| user | " + " | ".join(heads) + " |\n|---|" + "---:|" * windows)
    for user in users:
        cells = []
        for w in range(windows):
            busy = sum(share[u][w] for u in users) or 1.0
            cells.append(f"{share[user][w] / busy:.0%}")
        print(f"| {user} | " + " | ".join(cells) + " |")


# --- soak -------------------------------------------------------------------------------


def bench_soak(args: argparse.Namespace) -> None:
    """Many studies while trial workers are SIGKILLed at random; count lost and stuck trials."""
    per_study = args.trials // args.studies
    rng = random.Random(0)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(running_service(tmp, MAX_TRIAL_ATTEMPTS="5"))
        api = httpx.Client(base_url=url, timeout=60)
        ids = [
            submit(
                api,
                synthetic_study(
                    f"soak-{i}",
                    per_study,
                    max_concurrent=2,
                    resources={"cpus": 0.5},
                    fixed={"steps": 5, "sleep_s": 0.02},
                ),
            )["id"]
            for i in range(args.studies)
        ]
        kills, wall = soak_with_kills(api, ids, args.kill_every, 0.2, rng)
        rows = {sid: trials_of(api, sid) for sid in ids}
        finals = {sid: api.get(f"/api/v1/studies/{sid}").json() for sid in ids}
    complete = sum(sum(t["state"] == "complete" for t in items) for items in rows.values())
    stuck = sum(sum(t["state"] == "running" for t in items) for items in rows.values())
    failed = sum(sum(t["state"] == "fail" for t in items) for items in rows.values())
    short = sum(
        max(0, per_study - sum(t["state"] == "complete" for t in items)) for items in rows.values()
    )
    statuses = sorted({f["status"] for f in finals.values()})
    print(
        "| studies | trials asked | worker kills | complete | failed (re-run) | stuck | "
        "studies short of n_trials | study statuses | wall s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
        f"| {args.studies} | {per_study * args.studies} | {kills} | {complete} | {failed} | "
        f"{stuck} | {short} | {', '.join(statuses)} | {wall:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--sleep-s", type=float, default=0.0, help="objective seconds per step")
    p = sub.add_parser("api")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--think-s", type=float, default=1.0, help="a client's pause between requests")
    p = sub.add_parser("fairness")
    p.add_argument("--sleep-s", type=float, default=0.1)
    p.add_argument("--sizes", type=int, nargs="+")
    p = sub.add_parser("soak")
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--studies", type=int, default=20)
    p.add_argument("--kill-every", type=float, default=10.0)
    args = parser.parse_args()
    {"overhead": bench_overhead, "api": bench_api, "fairness": bench_fairness, "soak": bench_soak}[
        args.what
    ](args)


if __name__ == "__main__":
    main()
