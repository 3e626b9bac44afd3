"""Issue #7: the tuning service against Ray Tune and plain Optuna, and the scale of one study.

    python -m benchmarks.head_to_head compare [--trials 300 --db sqlite postgres]
    python -m benchmarks.head_to_head scale [--trials 10000 --budget-s 900]

``compare`` runs the same ``synthetic`` objective (``steps=1``, ``sleep_s=0.01``: 10 ms a
trial) with the same TPE sampler (seed 0, 10 random start-up trials, the service's setting
for a study this size) and two trials at a time through

* this service: ``adamp-tune serve`` with a 2-CPU local Ray, REST submission to the study's
  end (``benchmarks.harness.running_service``);
* Ray Tune: ``tune.Tuner`` with ``OptunaSearch`` (given the same Optuna storage where a
  database is named; in memory otherwise) on a local ``ray.init(num_cpus=2)``;
* plain Optuna: ``study.optimize(objective, n_jobs=2)`` on the same kind of database;

and prints wall time per trial and overhead per trial (wall minus objective time divided by
the concurrency, per trial). Each system first runs a 4-trial warm-up (Ray workers started,
imports done) that is not timed; the service's own start-up and ``ray.init`` are not timed.

``scale`` grows one study of the service (SQLite, ``steps=1``, ``sleep_s=0``) and, at each
checkpoint, times the study and trial-page endpoints, the dashboard page and its fast plots,
and Optuna's ask+tell with TPE on a snapshot of the service's own database file (a copy made
with SQLite's backup API, so the running study is never written to by the benchmark).

Over ~400 lines on purpose: ``scale`` reuses ``compare``'s search space, sampler settings
and constants, and both are cited in RESULTS.md as ``benchmarks.head_to_head`` commands.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution

from benchmarks.harness import (
    postgres_database,
    running_service,
    submit,
    synthetic_study,
    trials_of,
    wait_all,
)
from service.optuna_glue import storage_for
from workers.builtin.synthetic import WORKLOAD, loss_of

OPTIMIZER = "adamp"
STEPS = 1
SLEEP_S = 0.01
CONCURRENCY = 2
SEED = 0
N_STARTUP = 10
"""TPE's random start-up trials: what the service uses for any study of 40 trials or more."""
WARMUP_TRIALS = 4


def space() -> dict[str, FloatDistribution]:
    """The ``synthetic`` workload's default space for AdamP: lr, delta, wd_ratio."""
    return {
        key: FloatDistribution(r.low, r.high, log=r.log)
        for key, r in WORKLOAD.default_space[OPTIMIZER].items()
    }


def tpe() -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=SEED, n_startup_trials=N_STARTUP)


@dataclass
class Row:
    system: str
    database: str
    trials: int
    wall_s: float
    best: float
    note: str = ""

    @property
    def per_trial_ms(self) -> float:
        return self.wall_s / self.trials * 1e3

    @property
    def overhead_ms(self) -> float:
        objective = self.trials * STEPS * SLEEP_S / CONCURRENCY
        return (self.wall_s - objective) / self.trials * 1e3


@contextlib.contextmanager
def database(kind: str, workdir: Path, name: str) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'{name}.db'}"
    else:
        with postgres_database() as url:
            yield url


# --- the three systems ------------------------------------------------------------------


def _service_body(name: str, n_trials: int) -> dict[str, Any]:
    return synthetic_study(
        name,
        n_trials,
        optimizer=OPTIMIZER,
        sampler="tpe",
        seed=SEED,
        max_concurrent=CONCURRENCY,
        resources={"cpus": 1},
        search_space={k: {"low": d.low, "high": d.high, "log": d.log} for k, d in space().items()},
        fixed={"steps": STEPS, "sleep_s": SLEEP_S},
    )


def run_service(kind: str, n_trials: int) -> Row:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db_url = None if kind == "sqlite" else stack.enter_context(postgres_database())
        url = stack.enter_context(running_service(tmp, db_url))
        api = httpx.Client(base_url=url, timeout=60)
        warm = submit(api, _service_body("warm-up", WARMUP_TRIALS))
        wait_all(api, [warm["id"]], timeout_s=600)
        start = time.monotonic()
        study = submit(api, _service_body("head-to-head", n_trials))
        final = wait_all(api, [study["id"]], timeout_s=3600)[study["id"]]
        wall = time.monotonic() - start
        trials = trials_of(api, study["id"])
    complete = [t for t in trials if t["state"] == "complete"]
    durations = [t["duration_s"] for t in complete if t["duration_s"] is not None]
    note = (
        f"status {final['status']}; worker-side trial p50 "
        f"{statistics.median(durations) * 1e3:.0f} ms"
    )
    # The workload reports its learning curve's last value, final + (1 + final) e^-4 for
    # one step: a monotone transform of the objective the other systems minimise
    # (``loss_of``), so TPE ranks the trials alike; the best loss is compared on
    # ``loss_of`` itself.
    best = min(loss_of(OPTIMIZER, t["params"]) for t in complete)
    return Row("adamp-tune service (REST)", kind, len(complete), wall, best, note)


def _objective(trial: optuna.Trial) -> float:
    params = {k: trial.suggest_float(k, d.low, d.high, log=d.log) for k, d in space().items()}
    time.sleep(SLEEP_S * STEPS)
    return loss_of(OPTIMIZER, params)


def run_optuna(kind: str, n_trials: int) -> Row:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), "optuna") as url:
        storage = storage_for(url)
        warm = optuna.create_study(study_name="warm-up", storage=storage, sampler=tpe())
        warm.optimize(_objective, n_trials=WARMUP_TRIALS, n_jobs=CONCURRENCY)
        study = optuna.create_study(study_name="head-to-head", storage=storage, sampler=tpe())
        start = time.monotonic()
        study.optimize(_objective, n_trials=n_trials, n_jobs=CONCURRENCY)
        wall = time.monotonic() - start
        n = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        best = study.best_value
        storage.engine.dispose()
    return Row("plain Optuna (`study.optimize`, n_jobs=2)", kind, n, wall, best)


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune  # noqa: PLC0415 - Ray Tune is only needed on this path

    time.sleep(SLEEP_S * STEPS)
    tune.report({"loss": loss_of(OPTIMIZER, config)})


def _tune_once(
    n_trials: int, storage: optuna.storages.BaseStorage | None, name: str, reuse: bool, tmp: Path
) -> tuple[float, float, int]:
    from ray import tune  # noqa: PLC0415
    from ray.tune.search.optuna import OptunaSearch  # noqa: PLC0415

    search = OptunaSearch(
        space(),  # type: ignore[arg-type]
        metric="loss",
        mode="min",
        sampler=tpe(),
        study_name=name,
        storage=storage,
    )
    tuner = tune.Tuner(
        _trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            num_samples=n_trials,
            max_concurrent_trials=CONCURRENCY,
            reuse_actors=reuse,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp), verbose=0),
    )
    start = time.monotonic()
    results = tuner.fit()
    wall = time.monotonic() - start
    done = [results[i] for i in range(len(results))]
    metrics = [r.metrics or {} for r in done if r.error is None]
    losses = [float(m["loss"]) for m in metrics if "loss" in m]
    return wall, min(losses), len(losses)


def run_ray_tune(
    kinds: list[str], n_trials: int, reuse_variant: bool, in_memory: bool = True
) -> list[Row]:
    import ray  # noqa: PLC0415

    rows = []
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            _tune_once(WARMUP_TRIALS, None, "warm-up", False, tmp)
            runs: list[tuple[str, str, bool]] = [(k, k, False) for k in kinds]
            if in_memory:
                runs.append(("memory", "n/a (in memory)", False))
            if reuse_variant:
                runs.append(("memory", "n/a (in memory)", True))
            for i, (kind, label, reuse) in enumerate(runs):
                with contextlib.ExitStack() as stack:
                    storage = None
                    if kind != "memory":
                        url = stack.enter_context(database(kind, tmp, f"tune{i}"))
                        storage = storage_for(url)
                    wall, best, n = _tune_once(n_trials, storage, f"head-to-head-{i}", reuse, tmp)
                    if storage is not None:
                        storage.engine.dispose()
                system = "Ray Tune + OptunaSearch" + (" (reuse_actors=True)" if reuse else "")
                storage_note = "OptunaSearch given the RDB storage" if storage else ""
                rows.append(Row(system, label, n, wall, best, storage_note))
                print(_row_md(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    return rows


def _row_md(row: Row) -> str:
    return (
        f"| {row.system} | {row.database} | {row.trials} | {row.wall_s:.1f} | "
        f"{row.per_trial_ms:.1f} | {row.overhead_ms:.1f} | {row.best:.4f} | {row.note} |"
    )


HEADER = (
    "| system | database | trials | wall s | wall ms/trial | overhead ms/trial | best loss "
    "| note |\n|---|---|---:|---:|---:|---:|---:|---|"
)


def bench_compare(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    systems = set(args.systems)
    print(HEADER, flush=True)
    for kind in args.db:
        if "service" in systems:
            rows.append(run_service(kind, args.trials))
            print(_row_md(rows[-1]), flush=True)
        if "optuna" in systems:
            rows.append(run_optuna(kind, args.trials))
            print(_row_md(rows[-1]), flush=True)
    if "ray" in systems:
        rows += run_ray_tune(
            args.db, args.ray_trials or args.trials, args.reuse_actors, not args.no_memory
        )
    print("\nAll rows, grouped by database:\n")
    print(HEADER)
    for row in sorted(rows, key=lambda r: r.database):
        print(_row_md(row))
    print()
    for kind in args.db:
        by = {r.system.split(" ")[0]: r for r in rows if r.database == kind}
        service, ray_tune, plain = by.get("adamp-tune"), by.get("Ray"), by.get("plain")
        if service is None:
            continue
        if ray_tune is not None:
            print(
                f"{kind}: service overhead / Ray Tune overhead = "
                f"{service.overhead_ms / ray_tune.overhead_ms:.2f} (target <= 0.5)"
            )
        if plain is not None:
            print(
                f"{kind}: service overhead / plain Optuna overhead = "
                f"{service.overhead_ms / plain.overhead_ms:.2f} (target <= 2)"
            )


# --- scale of one study -----------------------------------------------------------------


def _median_ms(call: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _snapshot(db_file: Path, copy: Path) -> None:
    """A consistent copy of the service's SQLite file (SQLite's online backup)."""
    src = sqlite3.connect(db_file)
    dst = sqlite3.connect(copy)
    with dst:
        src.backup(dst)
    dst.execute("PRAGMA journal_mode=WAL")  # as the service's engine sets it
    src.close()
    dst.close()


def ask_tell_ms(db_file: Path, study_name: str, workdir: Path) -> tuple[float, float, int]:
    """On a snapshot of the service's database: the first TPE ask of a fresh process (all
    trials loaded into Optuna's cache), then the median of 20 ask+tell pairs, as the
    scheduler's loop does them (same cached storage, same distributions)."""
    copy = workdir / f"snapshot-{time.monotonic_ns()}.db"
    _snapshot(db_file, copy)
    try:
        storage = optuna.storages.get_storage(storage_for(f"sqlite:///{copy}"))
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=N_STARTUP),
        )
        dists: dict[str, BaseDistribution] = dict(space())
        start = time.perf_counter()
        first = study.ask(fixed_distributions=dists)
        cold = (time.perf_counter() - start) * 1e3
        study.tell(first, loss_of(OPTIMIZER, first.params))
        n_before = len(study.get_trials(deepcopy=False)) - 1

        def ask_tell() -> None:
            trial = study.ask(fixed_distributions=dists)
            study.tell(trial, loss_of(OPTIMIZER, trial.params))

        warm = _median_ms(ask_tell, 20)
    finally:
        copy.unlink(missing_ok=True)
    return cold, warm, n_before


@dataclass
class Checkpoint:
    target: int
    complete: int
    elapsed_s: float
    study_ms: float
    trials_ms: float
    page_ms: float
    plots_ms: float
    plots_first_ms: float
    ask_cold_ms: float
    ask_tell_ms: float
    snapshot_trials: int
    running: bool


def _measure(
    api: httpx.Client, sid: int, name: str, db_file: Path, tmp: Path, target: int, t0: float
) -> Checkpoint:
    elapsed = time.monotonic() - t0
    view = api.get(f"/api/v1/studies/{sid}").raise_for_status().json()
    running = view["status"] not in ("completed", "failed", "cancelled")

    def get(path: str, params: dict[str, Any] | None = None) -> Callable[[], Any]:
        return lambda: api.get(path, params=params).raise_for_status()

    study_ms = _median_ms(get(f"/api/v1/studies/{sid}"), 20)
    trials_ms = _median_ms(get(f"/api/v1/studies/{sid}/trials", {"limit": 100}), 20)
    page_ms = _median_ms(get(f"/studies/{sid}"), 20)
    plots = get(f"/dashboard-api/studies/{sid}/plots", {"group": "fast"})
    plots_first = _median_ms(plots, 1)
    plots_ms = _median_ms(plots, 5)
    cold, warm, n = ask_tell_ms(db_file, name, tmp)
    return Checkpoint(
        target,
        view["counts"]["complete"],
        elapsed,
        study_ms,
        trials_ms,
        page_ms,
        plots_ms,
        plots_first,
        cold,
        warm,
        n,
        running,
    )


def _checkpoint_md(c: Checkpoint) -> str:
    return (
        f"| {c.target:,} | {c.complete:,} | {c.elapsed_s:.0f} | "
        f"{'running' if c.running else 'ended'} | {c.study_ms:.1f} | {c.trials_ms:.1f} | "
        f"{c.page_ms:.1f} | {c.plots_first_ms:.0f} / {c.plots_ms:.0f} | "
        f"{c.ask_cold_ms:.0f} | {c.ask_tell_ms:.1f} |"
    )


SCALE_HEADER = (
    "| checkpoint | complete trials | s since submit | study | `GET /studies/{id}` p50 ms "
    "| `GET /studies/{id}/trials?limit=100` p50 ms | dashboard `GET /studies/{id}` p50 ms "
    "| `plots?group=fast` first / p50 of 5 ms | TPE first ask, cold cache ms "
    "| TPE ask+tell p50 ms |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
)


def bench_scale(args: argparse.Namespace) -> None:
    checkpoints = sorted(c for c in args.checkpoints if c <= args.trials)
    if args.trials not in checkpoints:
        checkpoints.append(args.trials)
    rows: list[Checkpoint] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db_file = tmp / "data" / "adamp-tune.db"
        with running_service(tmp) as url:
            api = httpx.Client(base_url=url, timeout=300)
            body = synthetic_study(
                "scale",
                args.trials,
                sampler=args.sampler,
                seed=SEED,
                max_concurrent=CONCURRENCY,
                resources={"cpus": 1},
                fixed={"steps": 1, "sleep_s": 0.0},
            )
            t0 = time.monotonic()
            study = submit(api, body)
            sid = study["id"]
            cancelled = False
            print(SCALE_HEADER, flush=True)
            for target in checkpoints:
                while True:
                    view = api.get(f"/api/v1/studies/{sid}").raise_for_status().json()
                    done = view["status"] in ("completed", "failed", "cancelled")
                    if view["counts"]["complete"] >= target or done:
                        break
                    if not cancelled and time.monotonic() - t0 > args.budget_s:
                        print(
                            f"budget of {args.budget_s:.0f} s spent at "
                            f"{view['counts']['complete']} trials: cancelling",
                            flush=True,
                        )
                        api.post(f"/api/v1/studies/{sid}/cancel").raise_for_status()
                        cancelled = True
                    time.sleep(1.0)
                if done and view["counts"]["complete"] < target and rows:
                    break
                rows.append(_measure(api, sid, body["name"], db_file, tmp, target, t0))
                print(_checkpoint_md(rows[-1]), flush=True)
                if done:
                    break
            rate = rows[-1].complete / rows[-1].elapsed_s if rows else 0.0
    print(f"\nfill rate: {rate:.1f} trials/s on average up to the last checkpoint")


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--trials", type=int, default=300)
    p.add_argument(
        "--db", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    p.add_argument(
        "--systems",
        nargs="+",
        choices=["service", "ray", "optuna"],
        default=["service", "ray", "optuna"],
    )
    p.add_argument(
        "--reuse-actors",
        action="store_true",
        help="also run Ray Tune with reuse_actors=True (in memory)",
    )
    p.add_argument("--ray-trials", type=int, help="Ray Tune's trials (default: --trials)")
    p.add_argument("--no-memory", action="store_true", help="skip Ray Tune in memory")
    p = sub.add_parser("scale")
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 2500, 5000, 10_000])
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    p.add_argument("--budget-s", type=float, default=900.0, help="cancel the study after this long")
    args = parser.parse_args()
    {"compare": bench_compare, "scale": bench_scale}[args.what](args)


if __name__ == "__main__":
    main()
