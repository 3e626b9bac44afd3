"""The optimizers a study can tune: their names, knobs, defaults and copy-paste snippets.

AdamP and SGDP come from this project's ``adamp`` package; AdamW and SGD are the baselines
for side-by-side comparison. Knob defaults are the constructors' defaults, except that the
SGD family needs an ``lr`` (0.1 here) and uses momentum 0.9, the setting of the AdamP paper.

No torch here: the service validates and describes studies with these specs without the
training stack; the worker builds the optimizers (``workers.optimizers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workers.params import ParamSpec

_LR = ParamSpec("float", 1e-3, "learning rate", low=0.0, high=10.0, low_open=True)
_SGD_LR = ParamSpec("float", 0.1, "learning rate", low=0.0, high=10.0, low_open=True)
_BETA1 = ParamSpec("float", 0.9, "first-moment decay (betas[0])", low=0.0, high=1.0, high_open=True)
_BETA2 = ParamSpec(
    "float", 0.999, "second-moment decay (betas[1])", low=0.0, high=1.0, high_open=True
)
_EPS = ParamSpec("float", 1e-8, "term added for numerical stability", low=0.0, high=1.0)
_WEIGHT_DECAY = ParamSpec("float", 0.0, "decoupled weight decay", low=0.0, high=1.0)
_DELTA = ParamSpec(
    "float",
    0.1,
    "threshold of the scale-invariance test: project when max |cos(grad, weight)| < delta/sqrt(d)",
    low=0.0,
    high=10.0,
)
_WD_RATIO = ParamSpec(
    "float", 0.1, "weight-decay multiplier on projected (scale-invariant) weights", low=0, high=1
)
_NESTEROV = ParamSpec("bool", False, "Nesterov momentum")
_MOMENTUM = ParamSpec("float", 0.9, "momentum", low=0.0, high=1.0, high_open=True)
_DAMPENING = ParamSpec("float", 0.0, "dampening for momentum", low=0.0, high=1.0)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer a study may use: its knobs and how user code names it.

    How a worker builds it from knob values is ``workers.optimizers.build_optimizer``.
    """

    name: str
    description: str
    knobs: Mapping[str, ParamSpec]
    projects: bool
    """Whether it reports the fraction of weights it treated as scale-invariant."""
    python_name: str
    """How user code names the class, for copy-paste snippets."""


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamp": OptimizerSpec(
        "adamp",
        "AdamP: Adam with projection of scale-invariant weights (this project's adamp.AdamP)",
        {
            "lr": _LR,
            "beta1": _BETA1,
            "beta2": _BETA2,
            "eps": _EPS,
            "weight_decay": _WEIGHT_DECAY,
            "delta": _DELTA,
            "wd_ratio": _WD_RATIO,
            "nesterov": _NESTEROV,
        },
        projects=True,
        python_name="AdamP",
    ),
    "sgdp": OptimizerSpec(
        "sgdp",
        "SGDP: SGD with projection of scale-invariant weights (this project's adamp.SGDP)",
        {
            "lr": _SGD_LR,
            "momentum": _MOMENTUM,
            "dampening": _DAMPENING,
            "weight_decay": _WEIGHT_DECAY,
            "nesterov": _NESTEROV,
            "eps": _EPS,
            "delta": _DELTA,
            "wd_ratio": _WD_RATIO,
        },
        projects=True,
        python_name="SGDP",
    ),
    "adamw": OptimizerSpec(
        "adamw",
        "torch.optim.AdamW, the baseline for AdamP",
        {
            "lr": _LR,
            "beta1": _BETA1,
            "beta2": _BETA2,
            "eps": _EPS,
            "weight_decay": ParamSpec("float", 1e-2, "decoupled weight decay", low=0.0, high=1.0),
        },
        projects=False,
        python_name="torch.optim.AdamW",
    ),
    "sgd": OptimizerSpec(
        "sgd",
        "torch.optim.SGD, the baseline for SGDP",
        {
            "lr": _SGD_LR,
            "momentum": _MOMENTUM,
            "dampening": _DAMPENING,
            "weight_decay": _WEIGHT_DECAY,
            "nesterov": _NESTEROV,
        },
        projects=False,
        python_name="torch.optim.SGD",
    ),
}


def check_optimizer_combination(name: str, knobs: Mapping[str, Any]) -> None:
    """Reject knob combinations the optimizer's constructor would reject (checked at submission).

    Only combinations are checked here; single values are checked by their ``ParamSpec``.
    """
    if name in ("sgdp", "sgd") and knobs.get("nesterov"):
        if knobs.get("momentum", 0.0) <= 0.0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        if knobs.get("dampening", 0.0) != 0.0:
            raise ValueError("nesterov: Nesterov momentum needs dampening = 0")


def python_snippet(name: str, values: Mapping[str, Any]) -> str:
    """The constructor call for the knobs in ``values``, e.g. ``AdamP(params, lr=0.003, ...)``.

    Values that are not knobs of optimizer ``name`` (workload arguments) are left out; the
    two betas become one ``betas=(..., ...)`` tuple as the constructors take them.
    """
    spec = OPTIMIZERS[name]
    parts = ["params"]
    for knob in spec.knobs:
        if knob == "beta2" or (knob not in values and knob != "beta1"):
            continue
        if knob == "beta1":
            if "beta1" in values or "beta2" in values:
                beta1 = values.get("beta1", spec.knobs["beta1"].default)
                beta2 = values.get("beta2", spec.knobs["beta2"].default)
                parts.append(f"betas=({beta1!r}, {beta2!r})")
            continue
        parts.append(f"{knob}={values[knob]!r}")
    header = "from adamp import AdamP, SGDP" if spec.projects else "import torch"
    return f"{header}\noptimizer = {spec.python_name}({', '.join(parts)})"
