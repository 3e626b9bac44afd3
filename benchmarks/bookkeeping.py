"""Issue #14: the scheduler's bookkeeping against its floor and against Ray Tune's own.

    python -m benchmarks.bookkeeping [--trials 1600 --slots 16 --db sqlite postgres]
                                     [--users 1] [--no-ray-tune | --no-service]

Ray Tune's release test ``bookkeeping_overhead`` scaled down: ``--trials`` trials of one
second each on ``--slots`` slots (``ADAMP_TUNE_RAY_NUM_CPUS=slots``; ``synthetic`` with
``steps=1, sleep_s=1``, random sampler, no pruner). The floor is ``trials / slots``
seconds; the table prints how far above it each run ended. ``--users N`` submits N studies
of N users sharing the slots (each ``trials / N`` trials, ``max_concurrent = slots``).

Ray Tune's own ``timed_tune_run`` (``ray.tune.utils.release_test_util``, the function its
release test calls) runs the same trials in the same run, in a child process with its own
``ray.init(num_cpus=slots)``, unless ``--no-ray-tune``. The service is timed from the
first submission to the last study's end by its own clock (``created_at``, ``finished_at``;
polled once a second), its start-up excluded.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import queue
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.harness import (
    make_tokens,
    postgres_database,
    running_service,
    submit,
    synthetic_study,
    wait_all,
)


def run_service(kind: str, n_trials: int, slots: int, users: int) -> tuple[float, int]:
    """Wall seconds from submission to the end of every study, and complete trials."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db_url = None if kind == "sqlite" else stack.enter_context(postgres_database())
        names = [f"user{u}" for u in range(users)]
        tokens = make_tokens(tmp, names, db_url, admins=1) if users > 1 else {}
        settings = {"ray_num_cpus": str(slots)}
        if tokens:
            settings["auth"] = "required"
        url = stack.enter_context(running_service(tmp, db_url, **settings))
        clients = [_client(url, tokens.get(n)) for n in names]
        api = clients[0]
        warm = submit(api, _body("warm-up", slots, slots))
        wait_all(api, [warm["id"]], timeout_s=600)
        ids = [
            submit(client, _body(f"bookkeeping-{u}", n_trials // users, slots))["id"]
            for u, client in enumerate(clients)
        ]
        # Polled once a second (a tight poll costs the service CPU the trials need); the
        # time is the service's own: first submission to the last study's end.
        final = wait_all(api, ids, timeout_s=24 * 3600, poll_s=1.0)
    first = min(datetime.fromisoformat(s["created_at"]) for s in final.values())
    last = max(datetime.fromisoformat(s["finished_at"]) for s in final.values())
    complete = sum(s["counts"]["complete"] for s in final.values())
    return (last - first).total_seconds(), complete


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, timeout=60, headers=headers)


def _body(name: str, n_trials: int, slots: int) -> dict[str, object]:
    return synthetic_study(
        name,
        n_trials,
        max_concurrent=slots,
        resources={"cpus": 1},
        fixed={"steps": 1, "sleep_s": 1.0},
    )


def _ray_tune(n_trials: int, slots: int, out: multiprocessing.Queue[float]) -> None:
    import ray  # noqa: PLC0415 - only this child process needs Ray Tune
    from ray.tune.utils.release_test_util import timed_tune_run  # noqa: PLC0415

    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        timed_tune_run(
            name="bookkeeping overhead",
            num_samples=n_trials,
            results_per_second=1,
            trial_length_s=1,
            max_runtime=100_000,
            storage_path=tmp,
        )
        out.put(time.monotonic() - start)
    ray.shutdown()


def run_ray_tune(n_trials: int, slots: int) -> float:
    """Ray Tune's wall seconds for the same trials, in a process of its own."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[float] = ctx.Queue()
    proc = ctx.Process(target=_ray_tune, args=(n_trials, slots, out))
    proc.start()
    while True:  # a child that died (Ray Tune not installed, say) must not hang the run
        with contextlib.suppress(queue.Empty):
            wall = out.get(timeout=5.0)
            proc.join()
            return wall
        if not proc.is_alive():
            raise RuntimeError(
                f"Ray Tune's run ended without a result (exit code {proc.exitcode}); "
                "is the bench extra installed? pip install -e '.[bench]'"
            )


def _row(system: str, db: str, trials: int, wall: float, floor: float) -> str:
    over = (wall / floor - 1) * 100
    return f"| {system} | {db} | {trials} | {wall:.1f} | {floor:.0f} | {over:+.0f}% |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1600)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--db", nargs="+", default=["sqlite"], choices=["sqlite", "postgres"])
    parser.add_argument("--no-ray-tune", action="store_true")
    parser.add_argument("--no-service", action="store_true", help="Ray Tune's run alone")
    args = parser.parse_args()
    floor = args.trials / args.slots
    print("| system | database | trials | wall s | floor s | over the floor |")
    print("|---|---|---:|---:|---:|---:|", flush=True)
    for kind in [] if args.no_service else args.db:
        wall, done = run_service(kind, args.trials, args.slots, args.users)
        label = "adamp-tune service" + (f" ({args.users} users)" if args.users > 1 else "")
        print(_row(label, kind, done, wall, floor), flush=True)
    if not args.no_ray_tune:
        wall = run_ray_tune(args.trials, args.slots)
        print(_row("Ray Tune timed_tune_run", "n/a", args.trials, wall, floor), flush=True)


if __name__ == "__main__":
    main()
