"""Issue #7: the AdamP paper's observation, on this project's ``digits-cnn`` workload.

    python -m benchmarks.paper_claim norms [--epochs 40 --seeds 0 1 2]
    python -m benchmarks.paper_claim service [--trials 12 --epochs 8 --seeds 0 1 2]

``norms`` trains the workload's BatchNorm CNN directly (no service) with AdamW and AdamP, and
with SGD and SGDP, at the same learning rate and weight decay within each pair, and records
after every epoch the L2 norm of the scale-invariant weights (the three convolutions, each
followed by BatchNorm). Heo et al. observe that momentum optimizers grow that norm quickly,
which shrinks the effective step size; the projection of AdamP/SGDP should grow it markedly
less. Writes ``benchmarks/results/weight_norms.png``.

``service`` tunes each optimizer through the service (``adamp-tune serve``, 2-CPU local Ray):
a study over ``lr`` for AdamW and SGD and over ``lr``, ``delta``, ``wd_ratio`` for AdamP and
SGDP, the same trial budget and TPE seed for each, per seed; prints the best validation
accuracy (mean and spread over seeds) and the importances of ``delta`` and ``wd_ratio``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.harness import running_service, submit, wait_all
from workers.builtin.digits_cnn import _dataset, build_model
from workers.optimizers import build_optimizer

RESULTS = Path(__file__).parent / "results"
PAIRS = (("adamw", "adamp"), ("sgd", "sgdp"))
LR = {"adamw": 3e-3, "adamp": 3e-3, "sgd": 0.1, "sgdp": 0.1}
"""Direct training: a learning rate each pair shares (3x Adam's default; SGD's default)."""
WEIGHT_DECAY = {"adamw": 1e-2, "adamp": 1e-2, "sgd": 1e-4, "sgdp": 1e-4}
"""AdamW's default decoupled decay for the Adam pair; the paper's 1e-4 for the SGD pair."""
LR_RANGE = {"adamw": (1e-4, 1e-1), "adamp": (1e-4, 1e-1), "sgd": (1e-3, 1.0), "sgdp": (1e-3, 1.0)}
"""Tuning: the ``digits-cnn`` workload's default lr range of each optimizer."""


# --- weight norms, trained directly -----------------------------------------------------


@dataclass
class NormRun:
    optimizer: str
    seed: int
    norms: list[float] = field(default_factory=list)
    """Norm of the scale-invariant weights before training and after each epoch."""
    accuracy: list[float] = field(default_factory=list)


def _scale_invariant(model: nn.Module) -> list[torch.Tensor]:
    """Weights of the convolutions: each feeds a BatchNorm, so the loss ignores their scale."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def _norm(weights: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((w.double() ** 2).sum() for w in weights)).item())  # type: ignore[arg-type]


def train_recording_norms(
    optimizer: str, seed: int, epochs: int, width: int = 16, batch_size: int = 64
) -> NormRun:
    """``digits-cnn``'s training loop at a constant learning rate, recording norms."""
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = _dataset()
    model = build_model(width)
    weights = _scale_invariant(model)
    opt = build_optimizer(
        optimizer,
        model.parameters(),
        {"lr": LR[optimizer], "weight_decay": WEIGHT_DECAY[optimizer]},
    )
    shuffle = torch.Generator().manual_seed(seed)
    run = NormRun(optimizer, seed, norms=[_norm(weights)])
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y_train), generator=shuffle)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = (model(x_val).argmax(dim=1) == y_val).sum()
        run.accuracy.append(float(correct.item()) / len(y_val))
        run.norms.append(_norm(weights))
    return run


def _mean_curve(runs: list[NormRun]) -> list[float]:
    return [statistics.fmean(r.norms[i] for r in runs) for i in range(len(runs[0].norms))]


def plot_norms(by_optimizer: dict[str, list[NormRun]], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only this benchmark draws

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, pair in zip(axes, PAIRS, strict=True):
        for name, style in zip(pair, ("--", "-"), strict=True):
            runs = by_optimizer[name]
            epochs = range(len(runs[0].norms))
            for r in runs:
                ax.plot(epochs, r.norms, style, alpha=0.25, color="C0" if style == "--" else "C3")
            ax.plot(
                epochs,
                _mean_curve(runs),
                style,
                linewidth=2,
                color="C0" if style == "--" else "C3",
                label=f"{name} (lr={LR[name]:g}, wd={WEIGHT_DECAY[name]:g})",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("L2 norm of the conv weights (before BatchNorm)")
        ax.set_title(f"{pair[0]} vs {pair[1]}")
        ax.grid(alpha=0.3)
        ax.legend()
    seeds = len(next(iter(by_optimizer.values())))
    fig.suptitle(f"digits-cnn: norm of the scale-invariant weights ({seeds} seeds, mean bold)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_norms(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    by_optimizer: dict[str, list[NormRun]] = {}
    start = time.monotonic()
    for pair in PAIRS:
        for name in pair:
            by_optimizer[name] = [
                train_recording_norms(name, seed, args.epochs) for seed in args.seeds
            ]
    took = time.monotonic() - start
    marks = sorted({0, 1, 5, 10, args.epochs // 2, args.epochs} & set(range(args.epochs + 1)))
    print(f"{len(args.seeds)} seeds, {args.epochs} epochs, constant lr ({took:.0f} s)\n")
    print(
        "| optimizer | lr | weight decay | "
        + " | ".join(f"norm @ epoch {m}" for m in marks)
        + f" | growth x (epoch {args.epochs} / 0) | final val. accuracy |\n"
        + "|---|---:|---:|"
        + "---:|" * len(marks)
        + "---:|---:|"
    )
    for name, runs in by_optimizer.items():
        curve = _mean_curve(runs)
        growth = [r.norms[-1] / r.norms[0] for r in runs]
        accs = [r.accuracy[-1] for r in runs]
        print(
            f"| {name} | {LR[name]:g} | {WEIGHT_DECAY[name]:g} | "
            + " | ".join(f"{curve[m]:.2f}" for m in marks)
            + f" | {statistics.fmean(growth):.2f} (min {min(growth):.2f}, max {max(growth):.2f})"
            + f" | {statistics.fmean(accs):.3f} |"
        )
    path = RESULTS / "weight_norms.png"
    plot_norms(by_optimizer, path)
    print(f"\nplot: {path}")


# --- tuning through the service ---------------------------------------------------------


def _study_body(name: str, optimizer: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    low, high = LR_RANGE[optimizer]
    space: dict[str, Any] = {"lr": {"low": low, "high": high, "log": True}}
    if optimizer in ("adamp", "sgdp"):
        space["delta"] = {"low": 0.01, "high": 1.0, "log": True}
        space["wd_ratio"] = {"low": 0.0, "high": 1.0}
    return {
        "name": name,
        "workload": "digits-cnn",
        "optimizer": optimizer,
        "search_space": space,
        "fixed": {"weight_decay": WEIGHT_DECAY[optimizer], "epochs": args.epochs},
        "n_trials": args.trials,
        "max_concurrent": 2,
        "sampler": "tpe",
        "pruner": "none",
        "seed": seed,
        "resources": {"cpus": 1},
    }


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return (
        f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f} "
        f"(min {min(values):.4f}, max {max(values):.4f})"
    )


def bench_service(args: argparse.Namespace) -> None:
    names = [name for pair in PAIRS for name in pair]
    with tempfile.TemporaryDirectory() as tmp, running_service(Path(tmp)) as url:
        api = httpx.Client(base_url=url, timeout=120)
        ids: dict[int, tuple[str, int]] = {}
        start = time.monotonic()
        for seed in args.seeds:
            for name in names:
                body = _study_body(f"{name}-seed{seed}", name, seed, args)
                ids[submit(api, body)["id"]] = (name, seed)
        final = wait_all(api, list(ids), timeout_s=args.timeout_s)
        took = time.monotonic() - start
        importances = {
            sid: api.get(f"/api/v1/studies/{sid}/importance").raise_for_status().json()
            for sid, (name, _) in ids.items()
            if name in ("adamp", "sgdp")
        }
    print(
        f"{len(args.seeds)} seeds x {len(names)} studies of {args.trials} trials "
        f"({args.epochs} epochs each, TPE, no pruning) in {took:.0f} s\n"
    )
    print(
        "| optimizer | searched | weight decay (fixed) | best val. accuracy: mean ± std "
        "| per seed | studies |\n|---|---|---:|---|---|---|"
    )
    for name in names:
        studies = [final[sid] for sid, (n, _) in ids.items() if n == name]
        best = [s["best_trial"]["value"] for s in studies if s["best_trial"]]
        statuses = ", ".join(sorted({s["status"] for s in studies}))
        searched = ", ".join(studies[0]["search_space"])
        per_seed = ", ".join(f"{b:.4f}" for b in best)
        print(
            f"| {name} | {searched} | {WEIGHT_DECAY[name]:g} | {_spread(best)} | {per_seed} "
            f"| {statuses} |"
        )
    print(
        "\n| optimizer | seed | importance lr | importance delta | importance wd_ratio "
        "| complete |\n|---|---:|---:|---:|---:|---:|"
    )
    for sid, answer in importances.items():
        name, seed = ids[sid]
        imp = answer["importances"]
        cells = " | ".join(f"{imp.get(k, float('nan')):.2f}" for k in ("lr", "delta", "wd_ratio"))
        print(f"| {name} | {seed} | {cells} | {answer['n_complete']} |")
    for name in ("adamp", "sgdp"):
        rows = [a["importances"] for sid, a in importances.items() if ids[sid][0] == name]
        means = {
            k: statistics.fmean(r.get(k, 0.0) for r in rows) for k in ("lr", "delta", "wd_ratio")
        }
        print(
            f"\n{name}: mean importance over seeds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in means.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("norms")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("service")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--timeout-s", type=float, default=3600)
    args = parser.parse_args()
    {"norms": bench_norms, "service": bench_service}[args.what](args)


if __name__ == "__main__":
    main()
