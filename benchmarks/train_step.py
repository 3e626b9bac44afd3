"""One training step of a ResNet-50 (forward, backward, optimizer) with each optimizer.

    python -m benchmarks.train_step [--batch 64 --steps 30]

What a user of the optimizer pays per step, side by side on one GPU: torch's fused AdamW,
our AdamP (fused Triton path, and foreach), and the reference release. One model, each
optimizer with its own state, runs interleaved round by round; times are host wall times
around a synchronised step. Needs torchvision (for the model definition; no weights).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from adamp import AdamP
from benchmarks.reference import load_reference

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def main() -> None:
    torchvision = importlib.import_module("torchvision")  # the model definition only
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda")
    model = torchvision.models.resnet50().to(device)
    params = list(model.parameters())
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    ref = load_reference()
    options: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-2}
    makers: dict[str, Factory] = {
        "torch AdamW fused": lambda p: torch.optim.AdamW(p, **options, fused=True),
        "AdamP fused (Triton)": lambda p: AdamP(p, **options, fused=True),
        "AdamP foreach": lambda p: AdamP(p, **options, foreach=True),
        "reference AdamP (adamp==0.3.0)": lambda p: ref.AdamP(p, **options),
        "no optimizer (forward + backward only)": lambda p: torch.optim.SGD(p, lr=0.0),
    }
    opts = {name: make(params) for name, make in makers.items()}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for round_ in range(args.warmup + args.steps):
        for name, opt in opts.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            if not name.startswith("no optimizer"):
                opt.step()
            torch.cuda.synchronize()
            if round_ >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    base = statistics.median(times["torch AdamW fused"])
    print(
        f"{torch.cuda.get_device_name()}; torch {torch.__version__}; ResNet-50, batch {args.batch}"
    )
    print("| optimizer | median ms/step | vs AdamW fused |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"| {name} | {median:.2f} | {(median / base - 1) * 100:+.1f}% |")


if __name__ == "__main__":
    main()
