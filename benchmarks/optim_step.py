"""Time one optimizer step on ResNet-50 and ViT-B/16 parameter shapes, side by side.

    python -m benchmarks.optim_step [--models resnet50 vit_b16] [--steps 15] [--device cuda]
                                    [--families adamp adamw sgdp sgd]

Every optimizer runs over the same parameter tensors (each with its own state) and the
runs are interleaved step by step, so a busy machine slows all of them alike. Reported per
optimizer: median and spread of the step time, host-device syncs per step (CUDA only:
counted with ``torch.cuda.set_sync_debug_mode``), the speed-up over the reference release,
and the fraction of the memory-bandwidth floor reached (bytes the step must move, at the
bandwidth a large device-to-device copy reaches).

Gradients of weights that are scale-invariant in the real network (convolutions followed by
BatchNorm) are made orthogonal to their weight per output channel, as BatchNorm makes them,
so AdamP's projection branch runs as in training.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import SGD, AdamW

from adamp import SGDP, AdamP
from adamp import _fused as fused_kernels
from benchmarks.reference import load_reference
from benchmarks.shapes import MODELS, ParamShape

BYTES_PER_PARAM = {"adamp": 40, "adamw": 28, "sgdp": 28, "sgd": 20}
"""float32 bytes a step must move per parameter: reads of w, g and state, writes of w and
state; AdamP and SGDP read w, g and the update once more for their reductions."""

REFERENCE_FAMILY = {"adamp": "adamp", "adamw": "adamp", "sgdp": "sgdp", "sgd": "sgdp"}
"""Which reference release optimizer each family is compared with."""

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Contender:
    """One optimizer configuration in the race."""

    label: str
    family: str
    make: Factory
    is_reference: bool = False


def contenders(device: torch.device) -> list[Contender]:
    """The optimizers compared: the reference release, ours, and torch's own (our fused
    Triton path where the device has it: CUDA with Triton installed)."""
    ref = load_reference()
    adam: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-2}
    sgd: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    fused = device.type == "cuda" and fused_kernels.triton_available()
    adamp_fused = [
        Contender("AdamP fused (Triton)", "adamp", lambda p: AdamP(p, **adam, fused=True))
    ]
    sgdp_fused = [Contender("SGDP fused (Triton)", "sgdp", lambda p: SGDP(p, **sgd, fused=True))]
    # On the CPU, AdamP's and SGDP's default path (torch's fused CPU kernels, adamp._cpu).
    cpu = device.type == "cpu"
    adamp_cpu = [Contender("AdamP default (CPU kernels)", "adamp", lambda p: AdamP(p, **adam))]
    sgdp_cpu = [Contender("SGDP default (CPU kernels)", "sgdp", lambda p: SGDP(p, **sgd))]
    return [
        Contender("reference AdamP (adamp==0.3.0)", "adamp", lambda p: ref.AdamP(p, **adam), True),
        *(adamp_fused if fused else []),
        *(adamp_cpu if cpu else []),
        Contender("AdamP foreach", "adamp", lambda p: AdamP(p, **adam, foreach=True)),
        Contender("AdamP per-tensor", "adamp", lambda p: AdamP(p, **adam, foreach=False)),
        Contender("torch AdamW foreach", "adamw", lambda p: AdamW(p, **adam, foreach=True)),
        Contender("torch AdamW fused", "adamw", lambda p: AdamW(p, **adam, fused=True)),
        Contender("reference SGDP (adamp==0.3.0)", "sgdp", lambda p: ref.SGDP(p, **sgd), True),
        *(sgdp_fused if fused else []),
        *(sgdp_cpu if cpu else []),
        Contender("SGDP foreach", "sgdp", lambda p: SGDP(p, **sgd, foreach=True)),
        Contender("SGDP per-tensor", "sgdp", lambda p: SGDP(p, **sgd, foreach=False)),
        Contender("torch SGD foreach", "sgd", lambda p: SGD(p, **sgd, foreach=True)),
        Contender("torch SGD fused", "sgd", lambda p: SGD(p, **sgd, fused=True)),
    ]


def make_params(shapes: list[ParamShape], device: torch.device) -> list[torch.nn.Parameter]:
    """Parameters with fixed gradients; scale-invariant weights get orthogonal gradients."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        w = torch.randn(s.shape, generator=gen) * 0.05
        g = torch.randn(s.shape, generator=gen) * 1e-3
        if s.scale_invariant:
            rows_w, rows_g = w.reshape(s.shape[0], -1), g.reshape(s.shape[0], -1)
            radial = (rows_w * rows_g).sum(1, keepdim=True) / (rows_w * rows_w).sum(1, keepdim=True)
            g = (rows_g - radial * rows_w).reshape(s.shape)
        p = torch.nn.Parameter(w.to(device))
        p.grad = g.to(device)
        params.append(p)
    return params


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a 256 MiB device-to-device copy (read + write counted)."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(7):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(opt: torch.optim.Optimizer, device: torch.device) -> int | None:
    """Host-device synchronisations in one step (CUDA's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


@dataclass
class Result:
    """Step times of one contender on one model."""

    contender: Contender
    times_ms: list[float]
    syncs: int | None

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)


def race(
    shapes: list[ParamShape],
    device: torch.device,
    steps: int,
    warmup: int,
    families: tuple[str, ...] = ("adamp", "adamw", "sgdp", "sgd"),
) -> list[Result]:
    """Interleave the contenders' steps over shared parameters; collect per-step times."""
    params = make_params(shapes, device)
    racers = [(c, c.make(params)) for c in contenders(device) if c.family in families]
    times: dict[str, list[float]] = {c.label: [] for c, _ in racers}
    for round_ in range(warmup + steps):
        for contender, opt in racers:
            _sync(device)
            start = time.perf_counter()
            opt.step()
            _sync(device)
            if round_ >= warmup:
                times[contender.label].append((time.perf_counter() - start) * 1e3)
    return [Result(c, times[c.label], count_syncs(opt, device)) for c, opt in racers]


def report(model: str, shapes: list[ParamShape], results: list[Result], bandwidth: float) -> str:
    """A markdown table of one model's results."""
    n = sum(math.prod(s.shape) for s in shapes)
    refs = {r.contender.family: r.median for r in results if r.contender.is_reference}
    lines = [
        f"### {model}: {len(shapes)} tensors, {n / 1e6:.2f} M parameters",
        "",
        "| optimizer | median ms | p10 to p90 ms | syncs/step | vs reference | floor reached |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        family = r.contender.family
        floor_ms = n * BYTES_PER_PARAM[family] / bandwidth * 1e3
        ts = sorted(r.times_ms)
        p10, p90 = ts[int(0.1 * (len(ts) - 1))], ts[int(0.9 * (len(ts) - 1))]
        ref = refs.get(REFERENCE_FAMILY[family])
        speedup = f"{ref / r.median:.2f}x" if ref else "—"
        syncs = "—" if r.syncs is None else str(r.syncs)
        lines.append(
            f"| {r.contender.label} | {r.median:.2f} | {p10:.2f} to {p90:.2f} | {syncs} | "
            f"{speedup} | {floor_ms / r.median:.0%} |"
        )
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    """One line naming the machine, for the recorded results."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{what}; torch {torch.__version__}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=15, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--families",
        nargs="+",
        choices=["adamp", "adamw", "sgdp", "sgd"],
        default=["adamp", "adamw", "sgdp", "sgd"],
        help="which optimizer families race (default: all)",
    )
    parser.add_argument(
        "--fused-config",
        help="SEG,BLOCK,NUM_WARPS of the fused kernels (default: adamp._fused's), for tuning",
    )
    args = parser.parse_args()
    if args.fused_config:
        seg, block, warps = (int(x) for x in args.fused_config.split(","))
        fused_kernels.SEG, fused_kernels.BLOCK, fused_kernels.NUM_WARPS = seg, block, warps
    print(
        f"fused kernels: SEG={fused_kernels.SEG}, BLOCK={fused_kernels.BLOCK}, "
        f"NUM_WARPS={fused_kernels.NUM_WARPS}"
    )
    device = torch.device(args.device)
    bandwidth = copy_bandwidth(device)
    print(f"Machine: {machine(device)}; copy bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    for model in args.models:
        shapes = MODELS[model]()
        results = race(shapes, device, args.steps, args.warmup, tuple(args.families))
        print(report(model, shapes, results, bandwidth) + "\n", flush=True)


if __name__ == "__main__":
    main()
