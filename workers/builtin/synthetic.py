"""``synthetic``: a cheap analytic objective of the optimizer knobs, for load and fault tests.

The loss is a bowl in (log10 lr, log10 delta, wd_ratio) with its minimum at three times the
optimizer's default ``lr``, ``delta = 0.1`` and ``wd_ratio = 0.1``; a learning curve that
decays towards it is reported over ``steps`` steps, ``sleep_s`` apart, so pruners have
something to compare. ``fail_rate`` makes a seeded fraction of trials raise, to exercise
failure handling. No tensors are involved: a trial costs only what ``sleep_s`` asks for.
With ``sleep_s > 0`` the noise generator's state is checkpointed after each step, so a
re-run trial continues the same curve (what the resume tests check); instant trials
(``sleep_s = 0``, the load benchmarks) have nothing worth resuming and save none.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from workers.context import TrialContext
from workers.optimizer_specs import OPTIMIZERS
from workers.params import ParamSpec
from workers.registry import SearchRange, Workload, register


class SyntheticFailure(RuntimeError):
    """The failure ``fail_rate`` asks for."""


def loss_of(optimizer: str, knobs: dict[str, float]) -> float:
    """The objective's final value for ``knobs`` (defaults fill what a study leaves out)."""
    specs = OPTIMIZERS[optimizer].knobs
    lr = knobs.get("lr", specs["lr"].default)
    best_lr = 3.0 * specs["lr"].default
    loss = (math.log10(lr) - math.log10(best_lr)) ** 2
    if "delta" in specs:
        delta = max(knobs.get("delta", specs["delta"].default), 1e-6)
        loss += 0.5 * math.log10(delta / 0.1) ** 2
    if "wd_ratio" in specs:
        loss += (knobs.get("wd_ratio", specs["wd_ratio"].default) - 0.1) ** 2
    return loss


def train(ctx: TrialContext) -> float:
    """Report a decaying curve that ends at ``loss_of(knobs)``, plus seeded noise."""
    steps: int = ctx.args["steps"]
    rng = random.Random(ctx.seed)
    if rng.random() < ctx.args["fail_rate"]:
        raise SyntheticFailure(f"synthetic failure (fail_rate={ctx.args['fail_rate']})")
    final = loss_of(ctx.optimizer_name, ctx.knobs)
    value = final
    saved = ctx.load_checkpoint()
    if saved is not None:
        rng.setstate(_as_state(saved["rng"]))
        value = float(saved["value"])
    for step in range(ctx.last_step + 1, steps):
        if ctx.args["sleep_s"] > 0:
            time.sleep(ctx.args["sleep_s"])
        decay = math.exp(-4.0 * (step + 1) / steps)
        value = final + (1.0 + final) * decay + ctx.args["noise"] * rng.gauss(0.0, 1.0)
        ctx.report(value, step)
        if ctx.args["sleep_s"] > 0:
            ctx.save_checkpoint({"rng": rng.getstate(), "value": value})
    return value


def _as_state(saved: Any) -> tuple[Any, ...]:
    """``random.Random.getstate()`` back from a checkpoint (lists may come back for tuples)."""
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


WORKLOAD = register(
    Workload(
        name="synthetic",
        checkpoints=True,
        train=train,
        metric="loss",
        direction="minimize",
        description=(
            "Analytic bowl over lr, delta and wd_ratio with a decaying learning curve; "
            "for load tests and the scheduler's own tests (no training, no tensors)."
        ),
        args={
            "steps": ParamSpec("int", 10, "reports per trial", low=1, high=10_000),
            "sleep_s": ParamSpec("float", 0.0, "seconds per step", low=0.0, high=3600.0),
            "noise": ParamSpec("float", 0.0, "std of Gaussian noise on each value", low=0, high=10),
            "fail_rate": ParamSpec(
                "float", 0.0, "probability that a trial raises", low=0.0, high=1.0
            ),
        },
        default_space={
            name: {
                "lr": SearchRange(
                    spec.knobs["lr"].default / 30, spec.knobs["lr"].default * 30, True
                ),
                **(
                    {"delta": SearchRange(0.01, 1.0, log=True), "wd_ratio": SearchRange(0.0, 1.0)}
                    if spec.projects
                    else {}
                ),
            }
            for name, spec in OPTIMIZERS.items()
        },
    )
)
