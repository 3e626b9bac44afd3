"""How a worker builds a trial's optimizer from the knob values the sampler chose.

The specs (names, knobs, defaults) are in the torch-free ``workers.optimizer_specs``; this
module adds the torch constructors, and is only imported where trials run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from adamp import SGDP, AdamP
from workers.optimizer_specs import OPTIMIZERS
from workers.params import with_defaults


def _build_adamp(params: Iterable[torch.nn.Parameter], k: dict[str, Any]) -> torch.optim.Optimizer:
    return AdamP(
        params,
        lr=k["lr"],
        betas=(k["beta1"], k["beta2"]),
        eps=k["eps"],
        weight_decay=k["weight_decay"],
        delta=k["delta"],
        wd_ratio=k["wd_ratio"],
        nesterov=k["nesterov"],
    )


def _build_sgdp(params: Iterable[torch.nn.Parameter], k: dict[str, Any]) -> torch.optim.Optimizer:
    return SGDP(
        params,
        lr=k["lr"],
        momentum=k["momentum"],
        dampening=k["dampening"],
        weight_decay=k["weight_decay"],
        nesterov=k["nesterov"],
        eps=k["eps"],
        delta=k["delta"],
        wd_ratio=k["wd_ratio"],
    )


def _build_adamw(params: Iterable[torch.nn.Parameter], k: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params,
        lr=k["lr"],
        betas=(k["beta1"], k["beta2"]),
        eps=k["eps"],
        weight_decay=k["weight_decay"],
    )


def _build_sgd(params: Iterable[torch.nn.Parameter], k: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=k["lr"],
        momentum=k["momentum"],
        dampening=k["dampening"],
        weight_decay=k["weight_decay"],
        nesterov=k["nesterov"],
    )


_BUILDERS: dict[
    str, Callable[[Iterable[torch.nn.Parameter], dict[str, Any]], torch.optim.Optimizer]
] = {
    "adamp": _build_adamp,
    "sgdp": _build_sgdp,
    "adamw": _build_adamw,
    "sgd": _build_sgd,
}


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], knobs: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` with ``knobs`` completed by the defaults."""
    spec = OPTIMIZERS[name]
    return _BUILDERS[name](params, with_defaults(spec.knobs, knobs))
