"""Launch shapes of the fused kernels, and where a fused step's time goes, on one GPU.

    python -m benchmarks.fused_tuning

For each (segment length, block, warps) configuration: the median time of one eager fused
AdamP step on ResNet-50 and ViT-B/16 shapes (host work included, as a training loop sees
it) and of a replay of the same step captured in a CUDA graph (device work alone), next
to torch's fused AdamW (the target). Then a torch.profiler table of the default
configuration's eager step. The defaults in ``adamp._fused`` come from this table,
recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from adamp import AdamP, _fused
from benchmarks.optim_step import make_params
from benchmarks.shapes import MODELS

CONFIGS = [(4096, 1024, 4), (2048, 1024, 4), (8192, 1024, 8), (4096, 2048, 8), (16384, 2048, 8)]
"""(SEG, BLOCK, NUM_WARPS) to try; the first is the shipped default."""


def median_ms(run: Callable[[], object], steps: int = 40, warmup: int = 5) -> float:
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def graphed_ms(opt: torch.optim.Optimizer) -> float:
    """Median replay time of one captured step (the device's share of a step)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    return median_ms(graph.replay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-only", action="store_true", help="time the defaults alone")
    args = parser.parse_args()
    configs = CONFIGS[:1] if args.default_only else CONFIGS
    device = torch.device("cuda")
    defaults = (_fused.SEG, _fused.BLOCK, _fused.NUM_WARPS)
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}")
    print(
        "| model | SEG | BLOCK | warps | AdamP fused eager ms | graph replay ms | "
        "AdamW fused eager ms | graph replay ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    options: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-2}
    replay_total: dict[tuple[int, int, int], float] = {}
    for model in sorted(MODELS):
        params = make_params(MODELS[model](), device)
        adamw = torch.optim.AdamW(params, **options, fused=True, capturable=True)
        adamw_eager = median_ms(adamw.step)
        adamw_graph = graphed_ms(adamw)
        for seg, block, warps in configs:
            _fused.SEG, _fused.BLOCK, _fused.NUM_WARPS = seg, block, warps
            _fused._PLANS.clear()
            opt = AdamP(params, **options, fused=True, capturable=True)
            eager = median_ms(opt.step)
            replay = graphed_ms(opt)
            replay_total[(seg, block, warps)] = replay_total.get((seg, block, warps), 0) + replay
            print(
                f"| {model} | {seg} | {block} | {warps} | {eager:.3f} | {replay:.3f} | "
                f"{adamw_eager:.3f} | {adamw_graph:.3f} |",
                flush=True,
            )
        _fused.SEG, _fused.BLOCK, _fused.NUM_WARPS = defaults
        _fused._PLANS.clear()
        opt = AdamP(params, **options, fused=True)
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                opt.step()
            torch.cuda.synchronize()
        print(f"\nprofile of 10 eager fused AdamP steps, {model}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
    best = min(replay_total, key=replay_total.__getitem__)
    print("best (least device time over both models): " + ",".join(map(str, best)))


if __name__ == "__main__":
    main()
