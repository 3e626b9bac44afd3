"""What only a GPU can show about AdamP and SGDP: no host syncs, CUDA graphs, numbers on CUDA.

    python -m benchmarks.gpu_checks [--steps 100]

CI has no GPU, so these checks run on a lent GPU machine and their output is recorded in
``benchmarks/RESULTS.md``. Each check prints one ``PASS``/``FAIL`` line with its numbers,
and the script exits non-zero if any failed:

* ``sync-free``: every path (per-tensor, foreach, fused where available; capturable or not)
  steps on ResNet-50 shapes under ``torch.cuda.set_sync_debug_mode("error")``, which raises
  on any host-device synchronisation;
* ``reference``: float32 on CUDA, ours against ``adamp==0.3.0`` after ``--steps`` steps
  (relative difference of the parameters) on ResNet-50 and ViT-B/16 shapes, with every
  branch of the test taken (gradients orthogonal per channel, per layer, or neither);
* ``paths agree``: foreach and fused against per-tensor after ``--steps`` steps;
* ``cuda graph``: a capturable step captured once with ``torch.cuda.graph`` and replayed
  gives the numbers of the same number of eager steps;
* ``bf16``: bfloat16 parameters step to finite values close to a float32 run.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch

from adamp import SGDP, AdamP, functional
from benchmarks.optim_step import make_params
from benchmarks.reference import load_reference
from benchmarks.shapes import MODELS

Params = list[torch.nn.Parameter]
OPTIONS: dict[str, dict[str, Any]] = {
    "AdamP": {"lr": 1e-3, "weight_decay": 1e-2},
    "SGDP": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
}
CLASSES: dict[str, Any] = {"AdamP": AdamP, "SGDP": SGDP}

failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    """Print one result line and remember failures."""
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def clone(params: Params, dtype: torch.dtype | None = None) -> Params:
    """Parameters with the same values and gradients (optionally cast)."""
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone().to(dtype or p.dtype))
        assert p.grad is not None
        q.grad = p.grad.clone().to(dtype or p.dtype)
        out.append(q)
    return out


def relative_difference(a: Params, b: Params) -> float:
    """``||a - b|| / ||b||`` over all parameters, in float64."""
    num = sum(float((x.double() - y.double()).square().sum()) for x, y in zip(a, b, strict=True))
    den = sum(float(y.double().square().sum()) for y in b)
    return float((num / den) ** 0.5)


def fresh_gradients(params: Params, seed: int) -> None:
    """New gradients each step, orthogonal per row for the scale-invariant weights."""
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        g = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32) * 1e-3
        if p.dim() > 1 and seed % 3 != 2:  # every third step the weights fail the test
            # Orthogonal per channel (channel view), or only as a whole (layer view).
            rows = p.shape[0] if seed % 3 == 0 else 1
            w = p.detach().float().reshape(rows, -1)
            r = g.reshape(rows, -1)
            r -= (r * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w
        p.grad = g.to(p.dtype)


Factory = Callable[[Params], torch.optim.Optimizer]


def ours(name: str, **kwargs: Any) -> Factory:
    """A factory of our ``name`` optimizer with the check's options and ``kwargs``."""

    def make(params: Params) -> torch.optim.Optimizer:
        optimizer: torch.optim.Optimizer = CLASSES[name](params, **OPTIONS[name], **kwargs)
        return optimizer

    return make


def reference_of(name: str) -> Factory:
    """A factory of the reference release's ``name`` optimizer with the check's options."""

    def make(params: Params) -> torch.optim.Optimizer:
        optimizer: torch.optim.Optimizer = getattr(load_reference(), name)(params, **OPTIONS[name])
        return optimizer

    return make


def run_steps(make: Factory, params: Params, steps: int) -> set[int]:
    """Step ``steps`` times; the projection codes seen (ours only: 0 none, 1 channel, 2 layer)."""
    opt = make(params)
    seen: set[int] = set()
    for step in range(steps):
        fresh_gradients(params, step)
        opt.step()
        codes = [opt.state[p]["projection"] for p in params if "projection" in opt.state[p]]
        if codes:
            seen |= {int(c) for c in torch.stack(codes).unique().tolist()}
    return seen


def path_kwargs() -> dict[str, dict[str, Any]]:
    """The paths to check."""
    return {
        "per-tensor": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }


def check_sync_free(base: Params) -> None:
    for name, cls in CLASSES.items():
        for path, kwargs in path_kwargs().items():
            for capturable in (False, True) if name == "AdamP" else (False,):
                params = clone(base)
                extra = {"capturable": True} if capturable else {}
                opt = cls(params, **OPTIONS[name], **kwargs, **extra)
                opt.step()  # state initialised outside the checked steps, as torch's own
                torch.cuda.synchronize()
                label = f"sync-free {name} {path} capturable={capturable}"
                try:
                    torch.cuda.set_sync_debug_mode("error")
                    for step in range(3):
                        fresh_gradients(params, step)
                        opt.step()
                    torch.cuda.set_sync_debug_mode("default")
                    torch.cuda.synchronize()
                    check(label, True, "3 steps under set_sync_debug_mode('error')")
                except RuntimeError as err:
                    torch.cuda.set_sync_debug_mode("default")
                    check(label, False, str(err).splitlines()[0])


def check_numbers(base: Params, steps: int) -> None:
    for name in CLASSES:
        expected = clone(base)
        run_steps(reference_of(name), expected, steps)
        per_tensor = clone(base)
        run_steps(ours(name, foreach=False), per_tensor, steps)
        for path, kwargs in path_kwargs().items():
            mine = clone(base)
            seen = run_steps(ours(name, **kwargs), mine, steps)
            diff = relative_difference(mine, expected)
            check(
                f"reference {name} {path}",
                diff < 1e-5 and seen == {0, 1, 2},
                f"rel. diff {diff:.2e} after {steps} steps; codes seen {sorted(seen)}",
            )
            if path != "per-tensor":
                agree = relative_difference(mine, per_tensor)
                check(f"paths agree {name} {path}", agree < 1e-6, f"rel. diff {agree:.2e}")


def check_cuda_graph(base: Params, steps: int) -> None:
    for name, cls in CLASSES.items():
        if name != "AdamP":  # SGDP, like torch's SGD, has no capturable mode
            continue
        for path, kwargs in path_kwargs().items():
            if path == "per-tensor":
                continue
            eager = clone(base)
            graphed = clone(base)
            opt_e = cls(eager, **OPTIONS[name], **kwargs, capturable=True)
            opt_g = cls(graphed, **OPTIONS[name], **kwargs, capturable=True)
            # Warm up on a side stream (state allocated), as torch's CUDA-graph recipe asks.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fresh_gradients(graphed, 0)
                opt_g.step()
            torch.cuda.current_stream().wait_stream(side)
            fresh_gradients(eager, 0)
            opt_e.step()
            static_grads = [p.grad for p in graphed]
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    opt_g.step()
            except Exception as err:
                check(f"cuda graph {name} {path}", False, f"capture failed: {err}")
                continue
            for step in range(1, steps):
                fresh_gradients(eager, step)
                opt_e.step()
                fresh_gradients(graphed, step)
                for static, p in zip(static_grads, graphed, strict=True):
                    assert p.grad is not None
                    assert static is not None
                    static.copy_(p.grad)
                    p.grad = static
                graph.replay()
            diff = relative_difference(graphed, eager)
            check(
                f"cuda graph {name} {path}", diff < 1e-6, f"replays vs eager rel. diff {diff:.2e}"
            )


def check_bf16(base: Params, steps: int) -> None:
    """bfloat16 parameters: finite, each path close to the per-tensor path in bfloat16
    (the same float32 math, rounded once per step), and the gap to float32 reported."""
    for name in CLASSES:
        full = clone(base)
        run_steps(ours(name, foreach=False), full, steps)
        per_tensor = clone(base, torch.bfloat16)
        run_steps(ours(name, foreach=False), per_tensor, steps)
        for path, kwargs in path_kwargs().items():
            half = clone(base, torch.bfloat16)
            run_steps(ours(name, **kwargs), half, steps)
            finite = all(bool(torch.isfinite(p).all()) for p in half)
            agree = relative_difference(half, per_tensor)
            gap = relative_difference(half, full)
            check(
                f"bf16 {name} {path}",
                finite and agree < 1e-3,
                f"finite={finite}, vs per-tensor bf16 {agree:.2e}, vs float32 {gap:.2e}",
            )


def guarded(function: Callable[..., None], *args: Any) -> None:
    """Run one group of checks; a crash fails that group and the others still run."""
    try:
        function(*args)
    except Exception:  # reported as a failed check, with its traceback
        traceback.print_exc()
        check(function.__name__, False, "crashed (traceback above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of the number checks")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_checks needs a CUDA device")
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; paths {list(path_kwargs())}")
    for model in sorted(MODELS):
        print(f"-- {model}")
        guarded(check_numbers, make_params(MODELS[model](), torch.device("cuda")), args.steps)
    print("-- resnet50")
    base = make_params(MODELS["resnet50"](), torch.device("cuda"))
    default = AdamP(base)
    group = default.param_groups[0]
    fused, _ = functional._default_to_fused_or_foreach(group["params"], None, None)
    check("default path on CUDA is fused", fused, "")
    guarded(check_sync_free, base)
    guarded(check_cuda_graph, base, 20)
    guarded(check_bf16, base, 20)
    print(f"\n{len(failures)} failed" + (f": {', '.join(failures)}" if failures else ""))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
