"""What checkpoints save and cost: the soak with worker kills, with checkpointing on and off,
and the time a checkpoint adds to an epoch of the built-in CNNs.

    python -m benchmarks.checkpoint_soak soak [--studies 3 --trials 8 --kill-every 5]
    python -m benchmarks.checkpoint_soak overhead [--repeats 3]

``soak`` runs the same studies twice through ``adamp-tune serve`` (2-CPU local Ray, as
``benchmarks.service_load soak``), once with ``ADAMP_TUNE_CHECKPOINTS=false``, SIGKILLing the
worker of a running trial every ``--kill-every`` s (± 50%). Each trial is ``steps`` epochs
of the ``synthetic`` workload (``sleep_s`` each). Epochs re-done: epochs the attempts of a
trial reported beyond the trial's own ``steps`` (an epoch reported by an attempt that was
killed and reported again by its re-run), per kill; the epoch in progress at a kill is lost
in both modes and counted apart. ``overhead`` trains digits-cnn and mnist1d-cnn in this
process with and without a local checkpoint store and reports the time per epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import optuna
from optuna.trial import TrialState

from benchmarks.harness import running_service, soak_with_kills, submit, synthetic_study


def _soak_once(args: argparse.Namespace, checkpoints: bool) -> dict[str, Any]:
    rng = random.Random(0)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db = f"sqlite:///{tmp / 'soak.db'}"
        url = stack.enter_context(
            running_service(
                tmp, db, MAX_TRIAL_ATTEMPTS="10", CHECKPOINTS="true" if checkpoints else "false"
            )
        )
        api = httpx.Client(base_url=url, timeout=60)
        body = {"steps": args.steps, "sleep_s": args.sleep_s, "noise": 0.1}
        names = [f"soak-{i}" for i in range(args.studies)]
        ids = [
            submit(
                api,
                synthetic_study(
                    name, args.trials, max_concurrent=2, resources={"cpus": 0.5}, fixed=body
                ),
            )["id"]
            for name in names
        ]
        kills, wall = soak_with_kills(api, ids, args.kill_every, 0.1, rng)
        trials = [t for n in names for t in optuna.load_study(study_name=n, storage=db).trials]
    own_reports = 0
    for t in trials:
        copied = t.user_attrs.get("resumed_from", -1) + 1
        own_reports += len(t.intermediate_values) - copied
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    needed = complete * args.steps
    killed = sum(t.user_attrs.get("stop_reason") == "worker died" for t in trials)
    return {
        "mode": "on" if checkpoints else "off",
        "kills": kills,
        "killed": killed,
        "complete": complete,
        "resumed": sum("resumed_from" in t.user_attrs for t in trials),
        "reported": own_reports,
        "needed": needed,
        "redone": own_reports - needed,
        "wall": wall,
    }


def bench_soak(args: argparse.Namespace) -> None:
    rows = [_soak_once(args, checkpoints) for checkpoints in (False, True)]
    print(
        f"{args.studies} studies x {args.trials} trials x {args.steps} epochs of "
        f"{args.sleep_s} s; a kill every {args.kill_every} s +- 50%\n"
    )
    print(
        "| checkpoints | kills | trials killed | complete | resumed | epochs reported | "
        "epochs needed | epochs re-done | re-done / needed | re-done per killed trial | wall s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        per_kill = r["redone"] / r["killed"] if r["killed"] else 0.0
        print(
            f"| {r['mode']} | {r['kills']} | {r['killed']} | {r['complete']} | {r['resumed']} | "
            f"{r['reported']} | {r['needed']} | {r['redone']} | "
            f"{r['redone'] / r['needed']:.1%} | {per_kill:.2f} | {r['wall']:.0f} |"
        )


def _trial_times(workload: str, store: str | None, epochs: int) -> tuple[float, float, int]:
    """Median seconds per epoch of one trial, seconds per ``save_checkpoint`` call (it runs
    in the training thread, so it is what an epoch pays), and the checkpoint's size."""
    from workers.context import TrialContext  # noqa: PLC0415
    from workers.messages import Placement, Report, TrialRequest  # noqa: PLC0415
    from workers.registry import get_workload  # noqa: PLC0415
    from workers.runner import run_trial  # noqa: PLC0415

    spec = get_workload(workload).args
    args = {name: p.default for name, p in spec.items()} | {"epochs": epochs}
    request = TrialRequest(
        1, 0, workload, "adamp", {"lr": 1e-3}, args, seed=0, num_cpus=1, checkpoint_url=store
    )
    saves: list[float] = []
    original = TrialContext.save_checkpoint

    def timed(self: TrialContext, state: Any, step: int | None = None) -> None:
        started = time.perf_counter()
        original(self, state, step)
        saves.append(time.perf_counter() - started)

    TrialContext.save_checkpoint = timed  # type: ignore[method-assign]
    try:
        stamps = [
            time.perf_counter()
            for e in run_trial(request, Placement("n", "127.0.0.1", "h", 1))
            if isinstance(e, Report)
        ]
    finally:
        TrialContext.save_checkpoint = original  # type: ignore[method-assign]
    per_epoch = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    size = sum(f.stat().st_size for f in Path(store).rglob("*.pt")) if store else 0
    return per_epoch, statistics.median(saves) if store else 0.0, size


def bench_overhead(args: argparse.Namespace) -> None:
    print(
        "| workload | epoch (ms, median) | save_checkpoint (ms, median) | overhead per epoch | "
        "checkpoint size |\n|---|---:|---:|---:|---:|"
    )
    for workload in ("digits-cnn", "mnist1d-cnn"):
        epochs: list[float] = []
        saves: list[float] = []
        size = 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                epoch, save, size = _trial_times(workload, tmp, args.epochs)
                epochs.append(epoch)
                saves.append(save)
        epoch, save = statistics.median(epochs), statistics.median(saves)
        print(
            f"| {workload} | {epoch * 1e3:.1f} | {save * 1e3:.2f} | {save / epoch:.2%} | "
            f"{size / 1024:.0f} KiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("soak")
    p.add_argument("--studies", type=int, default=3)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sleep-s", type=float, default=0.3)
    p.add_argument("--kill-every", type=float, default=5.0)
    p = sub.add_parser("overhead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    {"soak": bench_soak, "overhead": bench_overhead}[args.what](args)


if __name__ == "__main__":
    main()
