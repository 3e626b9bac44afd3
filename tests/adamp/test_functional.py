"""The functional API (``adamp.functional.adamp``, ``sgdp``): the numbers of the optimizer
classes and of the reference release, over plain tensor lists; and the one function that
chooses each tensor's path."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION, SGDP, AdamP, functional
from adamp.functional import Path, _choose_paths
from tests.adamp.helpers import (
    EVERY_CPU_PATH,
    NAMES,
    WEIGHTS,
    assert_all_close,
    clone_params,
    make_params,
    set_grads,
    tolerance,
    trace_reference,
)

ADAMP_OPTIONS: dict[str, Any] = {
    "lr": 2e-2,
    "betas": (0.8, 0.99),
    "weight_decay": 0.1,
    "wd_ratio": 0.3,
    "nesterov": True,
}
SGDP_OPTIONS: dict[str, Any] = {"lr": 3e-2, "momentum": 0.9, "weight_decay": 0.05, "wd_ratio": 0.2}


class FunctionalAdamP:
    """AdamP's state kept by hand in tensor lists, stepped by ``functional.adamp``."""

    def __init__(self, params: list[torch.Tensor], foreach: bool | None, **options: Any):
        self.params = params
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in params]
        self.codes = [torch.zeros((), dtype=torch.uint8) for _ in params]
        beta1, beta2 = options.pop("betas", (0.9, 0.999))
        self.options = {"beta1": beta1, "beta2": beta2, **options, "foreach": foreach}

    @torch.no_grad()
    def step(self) -> None:
        functional.adamp(
            self.params,
            [p.grad for p in self.params],
            self.exp_avgs,
            self.exp_avg_sqs,
            self.steps,
            self.codes,
            **self.options,
        )


class FunctionalSGDP:
    """SGDP's state kept by hand in tensor lists, stepped by ``functional.sgdp``."""

    def __init__(self, params: list[torch.Tensor], foreach: bool | None, **options: Any):
        self.params = params
        self.buffers = [torch.zeros_like(p) for p in params]
        self.codes = [torch.zeros((), dtype=torch.uint8) for _ in params]
        self.options = {**options, "foreach": foreach}

    @torch.no_grad()
    def step(self) -> None:
        functional.sgdp(
            self.params, [p.grad for p in self.params], self.buffers, self.codes, **self.options
        )


CASES = [
    (AdamP, FunctionalAdamP, ADAMP_OPTIONS),
    (AdamP, FunctionalAdamP, {"lr": 1e-2}),
    (SGDP, FunctionalSGDP, SGDP_OPTIONS),
    (SGDP, FunctionalSGDP, {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
]
CASE_IDS = ["AdamP-all-flags", "AdamP-plain", "SGDP-decay", "SGDP-nesterov"]


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "functional_cls", "options"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_functional_gives_the_optimizers_numbers_exactly(
    cls, functional_cls, options, foreach, maximize
):
    """Same path, same arithmetic: the class is bookkeeping around the function."""
    options = {**options, "maximize": maximize}
    by_class = make_params(torch.float64)
    by_function = clone_params(by_class)
    opt = cls(by_class.values(), foreach=foreach, **options)
    fn = functional_cls(list(by_function.values()), foreach, **options)
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        set_grads(by_class, [by_function], step, gen)
        opt.step()
        fn.step()
    for index, name in enumerate(NAMES):
        assert torch.equal(by_class[name], by_function[name]), name
        assert torch.equal(opt.state[by_class[name]]["projection"], fn.codes[index]), name
    if cls is AdamP:
        for index, name in enumerate(NAMES):
            assert torch.equal(opt.state[by_class[name]]["exp_avg_sq"], fn.exp_avg_sqs[index])
            assert fn.steps[index].item() == 6.0


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("cls", "functional_cls", "options"), CASES, ids=CASE_IDS)
def test_functional_matches_reference(reference, cls, functional_cls, options, dtype, foreach):
    """Step by step against ``adamp==0.3.0``: parameters and every projection decision."""
    ours = make_params(dtype, seed=1)
    theirs = clone_params(ours)
    fn = functional_cls(list(ours.values()), foreach, **options)
    ref = getattr(reference, cls.__name__)(theirs.values(), **options)
    ref_codes = trace_reference(ref)
    gen = torch.Generator().manual_seed(2)
    seen = set()
    for step in range(16):
        set_grads(ours, [theirs], step, gen)
        fn.step()
        ref.step()
        for index, name in enumerate(NAMES):
            code = int(fn.codes[index])
            if name in WEIGHTS:
                assert code == ref_codes[id(theirs[name])], f"step {step} {name}"
            seen.add(code)
        assert_all_close(ours, theirs, tolerance(dtype), f"step {step}")
    assert seen == {NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW}


def test_projections_may_be_left_out():
    """Without ``projections`` the codes are computed and dropped: the same parameters."""
    kept, dropped = make_params(torch.float64), make_params(torch.float64)
    set_grads(kept, [dropped], 0, torch.Generator().manual_seed(0))
    codes = [torch.zeros((), dtype=torch.uint8) for _ in NAMES]
    for params, projections in ((kept, codes), (dropped, None)):
        ps = list(params.values())
        moments = [[torch.zeros_like(p) for p in ps] for _ in range(2)]
        steps = [torch.zeros(()) for _ in ps]
        with torch.no_grad():
            functional.adamp(ps, [p.grad for p in ps], *moments, steps, projections, lr=0.1)
    for name in NAMES:
        assert torch.equal(kept[name], dropped[name]), name
    assert {int(c) for c in codes} != {NO_PROJECTION}  # the kept codes were written


def test_lists_of_different_lengths_are_refused():
    p = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="different lengths"):
        functional.sgdp([p], [p], [], lr=0.1)


def test_fused_and_foreach_are_exclusive():
    p = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="exclusive"):
        functional.sgdp([p], [p], [torch.zeros(2, 2)], lr=0.1, fused=True, foreach=True)


def _tensors(
    grad_layout: str = "contiguous", dtype: torch.dtype = torch.float32
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]]]:
    params = [torch.zeros(6, 4, dtype=dtype), torch.zeros(4, dtype=dtype)]
    grads = [torch.zeros(4, 6, dtype=dtype).t(), torch.zeros(4, dtype=dtype)]
    if grad_layout == "contiguous":
        grads[0] = grads[0].contiguous()
    buffers = [[torch.zeros(6, 4), torch.zeros(4)]]
    return params, grads, buffers


@pytest.mark.parametrize(
    ("flags", "grad_layout", "cpu_kernels", "expected"),
    [
        ({}, "contiguous", True, [(Path.CPU_KERNELS, [0, 1])]),
        ({}, "transposed", True, [(Path.CPU_KERNELS, [1]), (Path.SINGLE_TENSOR, [0])]),
        ({}, "contiguous", False, [(Path.SINGLE_TENSOR, [0, 1])]),
        ({"foreach": False}, "contiguous", True, [(Path.SINGLE_TENSOR, [0, 1])]),
        ({"fused": False}, "contiguous", True, [(Path.SINGLE_TENSOR, [0, 1])]),
        ({"foreach": True}, "transposed", True, [(Path.FOREACH, [0, 1])]),
    ],
    ids=[
        "cpu-default",
        "cpu-kernels-skip-a-transposed-gradient",
        "cpu-kernels-not-for-this-step",
        "foreach-false",
        "fused-false",
        "foreach-true",
    ],
)
def test_one_function_chooses_every_tensors_path(flags, grad_layout, cpu_kernels, expected):
    params, grads, buffers = _tensors(grad_layout)
    flags = {"fused": None, "foreach": None, **flags}
    chosen = _choose_paths(params, grads, buffers, None, cpu_kernels=cpu_kernels, **flags)
    assert chosen == expected


def test_fused_falls_back_to_foreach_by_device_and_dtype_group(monkeypatch):
    """Under Triton's interpreter the fused kernels take CPU tensors: a float32 group with a
    transposed gradient goes to the foreach path, the addressable bfloat16 group stays."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    params, grads, buffers = _tensors("transposed")
    low, low_grads, _ = _tensors("contiguous", torch.bfloat16)
    chosen = _choose_paths(
        params + low,
        grads + low_grads,
        [buffers[0] + buffers[0]],
        None,
        fused=True,
        foreach=None,
        cpu_kernels=True,
    )
    assert chosen == [(Path.FOREACH, [0, 1]), (Path.FUSED, [2, 3])]
