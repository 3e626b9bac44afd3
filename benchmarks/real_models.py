"""Issue 16: the real built-in models, trial by trial and tuned through the service.

    python -m benchmarks.real_models trials [--device cuda] [--repeats 3]
    python -m benchmarks.real_models studies [--trials 20 --seeds 0 1]

``trials`` runs ``workers.run_trial`` the way a Ray worker does, with each workload's default
budget and a fixed decent setting (AdamP and AdamW), on the device asked for (``cuda`` needs
a GPU; the trial is then placed on GPU 0); prints validation accuracy, time per trial, time
per epoch and the fraction of weights AdamP treated as scale-invariant.

``studies`` tunes AdamP and AdamW on ``mnist1d-cnn`` and ``digits-cnn`` through the service
(``adamp-tune serve`` with a 2-CPU local Ray, SQLite in a temporary folder): one study per
workload, optimizer and seed, over the workload's default search space and budget, TPE, no
pruning; prints the best validation accuracy of each and the mean of its five best trials.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from benchmarks.harness import running_service, submit, trials_of, wait_all
from workers.messages import Finished, Placement, Report, TrialRequest
from workers.registry import get_workload
from workers.runner import run_trial

WORKLOADS = ("mnist1d-cnn", "digits-cnn")
SETTINGS = {
    "adamp": {"lr": 1e-2, "weight_decay": 1e-4},
    "adamw": {"lr": 1e-2, "weight_decay": 1e-4},
}
"""``trials``: a decent setting, the same for both (AdamP's delta and wd_ratio at defaults)."""


def bench_trials(args: argparse.Namespace) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    gpu_ids = ("0",) if args.device == "cuda" else ()
    place = Placement("local", "127.0.0.1", "localhost", 0, gpu_ids=gpu_ids)
    torch_version = torch.__version__
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{args.threads} threads"
    print(f"device {args.device} ({name}), torch {torch_version}, {args.repeats} seeds each\n")
    print(
        "| workload | optimizer | val. accuracy (mean, min to max) | time per trial | "
        "per epoch | scale-invariant fraction |\n|---|---|---|---:|---:|---:|"
    )
    for workload in args.workloads:
        spec = get_workload(workload).args
        full = {k: s.default for k, s in spec.items()}
        for optimizer, knobs in SETTINGS.items():
            accuracy, seconds, per_epoch, fraction = [], [], [], []
            for seed in range(args.repeats):
                request = TrialRequest(
                    0, seed, workload, optimizer, knobs, full, seed=seed, num_cpus=args.threads
                )
                start = time.perf_counter()
                events = list(run_trial(request, place))
                seconds.append(time.perf_counter() - start)
                final = events[-1]
                assert isinstance(final, Finished)
                reports = [e for e in events if isinstance(e, Report)]
                # Epoch time without the data set's first load: the first report to the last.
                if len(reports) > 1:
                    span = reports[-1].elapsed_s - reports[0].elapsed_s
                    per_epoch.append(span / (len(reports) - 1))
                accuracy.append(final.value)
                if final.scale_invariant_fraction is not None:
                    fraction.append(final.scale_invariant_fraction)
            frac = f"{statistics.fmean(fraction):.3f}" if fraction else "—"
            print(
                f"| {workload} | {optimizer} | {statistics.fmean(accuracy):.4f} "
                f"({min(accuracy):.4f} to {max(accuracy):.4f}) | {statistics.fmean(seconds):.1f} s "
                f"| {statistics.fmean(per_epoch):.2f} s | {frac} |",
                flush=True,
            )


def _study_body(workload: str, optimizer: str, seed: int, n_trials: int) -> dict[str, Any]:
    return {
        "name": f"{workload}-{optimizer}-seed{seed}",
        "workload": workload,
        "optimizer": optimizer,
        "n_trials": n_trials,
        "max_concurrent": 2,
        "sampler": "tpe",
        "pruner": "none",
        "seed": seed,
        "resources": {"cpus": 1},
    }


def bench_studies(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_service(Path(tmp)) as url:
        api = httpx.Client(base_url=url, timeout=120)
        ids: dict[int, tuple[str, str, int]] = {}
        start = time.monotonic()
        for seed in args.seeds:
            for workload in args.workloads:
                for optimizer in args.optimizers:
                    body = _study_body(workload, optimizer, seed, args.trials)
                    ids[submit(api, body)["id"]] = (workload, optimizer, seed)
        final = wait_all(api, list(ids), timeout_s=args.timeout_s)
        took = time.monotonic() - start
        values = {
            sid: sorted(
                (t["value"] for t in trials_of(api, sid) if t["state"] == "complete"),
                reverse=True,
            )
            for sid in ids
        }
        durations = {
            sid: [t["duration_s"] for t in trials_of(api, sid) if t["duration_s"] is not None]
            for sid in ids
        }
    print(
        f"{len(ids)} studies of {args.trials} trials (default space and budget, TPE, "
        f"no pruning, 2 trials at a time per study, 1 CPU each) in {took:.0f} s\n"
    )
    print(
        "| workload | optimizer | seed | best val. accuracy | mean of best 5 | median trial "
        "| complete | mean trial time |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for sid, (workload, optimizer, seed) in ids.items():
        vals = values[sid]
        top5 = statistics.fmean(vals[:5]) if vals else float("nan")
        median = statistics.median(vals) if vals else float("nan")
        mean_time = statistics.fmean(durations[sid]) if durations[sid] else float("nan")
        print(
            f"| {workload} | {optimizer} | {seed} | {vals[0] if vals else float('nan'):.4f} "
            f"| {top5:.4f} | {median:.4f} | {len(vals)} ({final[sid]['status']}) "
            f"| {mean_time:.1f} s |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("trials")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("studies")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    p.add_argument("--optimizers", nargs="+", default=["adamp", "adamw"])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--timeout-s", type=float, default=7200)
    args = parser.parse_args()
    {"trials": bench_trials, "studies": bench_studies}[args.what](args)


if __name__ == "__main__":
    main()
