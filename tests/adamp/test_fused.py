"""The fused Triton path gives the numbers of the per-tensor path, on the CPU.

CI has no GPU: the kernels run here under Triton's interpreter (``TRITON_INTERPRET=1``,
set before the kernels are first imported), on CPU tensors, with the same launch metadata,
address tables and decisions as on CUDA. What only a GPU can show (no host syncs, CUDA
graph replay, speed) is checked by ``benchmarks/gpu_checks.py`` on a lent GPU, and recorded
in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import io
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

from adamp import (
    CHANNEL_VIEW,
    LAYER_VIEW,
    NO_PROJECTION,
    SGDP,
    AdamP,
    _fused,
)
from tests.adamp.helpers import (
    assert_all_close,
    assert_close,
    clone_params,
    codes_of,
    make_grad,
    make_params,
    set_grads,
)

ADAMP_OPTIONS = {"lr": 2e-2, "weight_decay": 0.1, "wd_ratio": 0.3, "nesterov": True}
SGDP_OPTIONS = {"lr": 3e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}
CASES = [
    (AdamP, ADAMP_OPTIONS),
    (AdamP, {"lr": 1e-2, "weight_decay": 0.05, "maximize": True}),
    (AdamP, {"lr": 1e-2, "weight_decay": 0.05, "capturable": True}),
    (SGDP, SGDP_OPTIONS),
    (SGDP, {"lr": 1e-2, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.1}),
    (SGDP, {"lr": 1e-2, "maximize": True}),
]
CASE_IDS = [
    "AdamP-all-flags",
    "AdamP-maximize",
    "AdamP-capturable",
    "SGDP-all-flags",
    "SGDP-dampening",
    "SGDP-no-momentum",
]
TOL = 2e-5
"""float32, 8 steps: the two paths sum the row statistics in different orders."""


def _lockstep(fused: dict, single: dict, opts: list, steps: int, skip=None) -> set[int]:
    """Step both optimizers on the same gradients; return every projection code seen."""
    gen = torch.Generator().manual_seed(0)
    seen: set[int] = set()
    for step in range(steps):
        set_grads(single, [fused], step, gen)
        if skip is not None:
            for name in skip(step):
                single[name].grad = fused[name].grad = None
        for opt in opts:
            opt.step()
        codes = codes_of(opts[0], fused)
        assert codes == codes_of(opts[1], single), f"step {step}"
        seen |= set(codes.values())
    return seen


@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_fused_matches_per_tensor(cls, options):
    single = make_params(torch.float32)
    fused = clone_params(single)
    opts = [
        cls(fused.values(), fused=True, **options),
        cls(single.values(), foreach=False, **options),
    ]
    # Some parameters miss steps, so step counts (AdamP's step sizes) differ between tensors.
    seen = _lockstep(
        fused, single, opts, 8, skip=lambda s: ["conv2d", "bias"] if s % 3 == 1 else []
    )
    assert seen == {NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW}, "every branch of the test ran"
    assert_all_close(fused, single, TOL, "params")
    for name, p in single.items():
        for key in cls.MOMENT_KEYS:
            assert_close(opts[0].state[fused[name]][key], opts[1].state[p][key], TOL, key)


def test_rows_longer_than_a_segment_and_weights_of_many_rows(monkeypatch):
    """Rows (and one-dimensional parameters) longer than ``SEG`` are cut into segments
    whose sums are added before the test, and weights with more rows than the decision
    kernel reads at once are read in chunks: the result is the per-tensor one.

    The decision kernel reads 16 rows at a time here instead of 512 (``DECIDE_ROWS`` is
    read at each launch): the same chunked path, with a "tall" weight of 24 rows instead of
    520, since the interpreter runs one program per row (57 s for 520 rows here)."""
    monkeypatch.setattr(_fused, "DECIDE_ROWS", 16)
    gen = torch.Generator().manual_seed(3)
    shapes = {
        "wide": (3, _fused.SEG + 904),
        "long_bias": (2 * _fused.SEG + 7,),
        "tall": (_fused.DECIDE_ROWS + 8, 2),
        "small": (4, 6),
    }
    single = {n: (0.1 * torch.randn(s, generator=gen)).requires_grad_() for n, s in shapes.items()}
    fused = clone_params(single)
    opts = [
        AdamP(fused.values(), fused=True, weight_decay=0.1),
        AdamP(single.values(), foreach=False, weight_decay=0.1),
    ]
    for step in range(3):
        for name, p in single.items():
            g = make_grad(p, ["channel", "layer", "none"][step], gen)
            p.grad, fused[name].grad = g, g.clone()
        for opt in opts:
            opt.step()
        assert codes_of(opts[0], fused) == codes_of(opts[1], single)
        expected = [CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION][step]
        assert codes_of(opts[0], fused)["wide"] == expected
        assert codes_of(opts[0], fused)["tall"] == expected
    assert_all_close(fused, single, TOL, "params")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("cls", "options"), [CASES[0], CASES[3]], ids=["AdamP", "SGDP"])
def test_half_precision_parameters_get_float32_math_rounded_once(cls, options, dtype):
    """fp16/bf16 parameters: float32 state, and after each step the parameter equals the
    fused float32 result from the same values, rounded. Two steps: the first from empty
    state, the second from float32 state the first left (the mirror is reset to the rounded
    parameter each step, so more steps would repeat the second)."""
    base = make_params(torch.float32, seed=5)
    low = {n: p.detach().to(dtype).requires_grad_() for n, p in base.items()}
    mirror = {n: p.detach().float().requires_grad_() for n, p in low.items()}
    opt_low = cls(low.values(), fused=True, **options)
    opt_mirror = cls(mirror.values(), fused=True, **options)
    gen = torch.Generator().manual_seed(6)
    for step in range(2):
        set_grads(low, [], step, gen)
        with torch.no_grad():
            for name, p in mirror.items():
                p.copy_(low[name])
                p.grad = low[name].grad.float()
        opt_low.step()
        opt_mirror.step()
        for name, p in low.items():
            assert p.dtype == dtype
            assert torch.isfinite(p).all(), f"step {step} {name}"
            assert torch.equal(p, mirror[name].detach().to(dtype)), f"step {step} {name}"
            for key in cls.MOMENT_KEYS:
                assert opt_low.state[p][key].dtype == torch.float32


@pytest.mark.parametrize("then", ["per-tensor", "fused"])
def test_state_dict_round_trip_continues_the_numbers(then):
    """Three fused steps, saved with ``torch.save`` and loaded into a new optimizer (fused
    or per-tensor), then three more: the numbers of six uninterrupted per-tensor steps.
    (The fused path keeps step counts and codes as views of shared buffers; a loaded
    state dict brings separate tensors, which it takes over again.)"""
    single = make_params(torch.float32, seed=2)
    fused = clone_params(single)
    opt_single = AdamP(single.values(), foreach=False, **ADAMP_OPTIONS)
    opt_fused = AdamP(fused.values(), fused=True, **ADAMP_OPTIONS)
    gen = torch.Generator().manual_seed(9)
    for step in range(6):
        if step == 3:
            buffer = io.BytesIO()
            torch.save(opt_fused.state_dict(), buffer)
            buffer.seek(0)
            path = {"fused": True} if then == "fused" else {"foreach": False}
            opt_fused = AdamP(fused.values(), **path, **ADAMP_OPTIONS)
            opt_fused.load_state_dict(torch.load(buffer))
        set_grads(single, [fused], step, gen)
        opt_single.step()
        opt_fused.step()
    assert_all_close(fused, single, TOL, "params")
    for name in single:
        assert float(opt_fused.state[fused[name]]["step"]) == 6.0, name
    assert codes_of(opt_fused, fused) == codes_of(opt_single, single)


def test_gradients_in_another_layout_take_the_foreach_path():
    """A gradient laid out unlike its parameter (a transposed view) cannot be addressed
    row by row: that device/dtype group steps on the foreach path, with the same numbers."""
    single = {"w": (0.1 * torch.randn(6, 4)).requires_grad_()}
    fused = clone_params(single)
    opts = [AdamP(fused.values(), fused=True), AdamP(single.values(), foreach=False)]
    for _ in range(2):
        g = torch.randn(4, 6).t()
        assert not g.is_contiguous()
        single["w"].grad, fused["w"].grad = g.clone(), g
        for opt in opts:
            opt.step()
    assert_all_close(fused, single, TOL, "params")


def test_fused_and_foreach_are_exclusive():
    with pytest.raises(ValueError, match="exclusive"):
        AdamP([torch.zeros(2, 2, requires_grad=True)], fused=True, foreach=True)


def test_fused_rejects_float64_naming_the_dtype():
    with pytest.raises(RuntimeError, match="float64"):
        SGDP([torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)], lr=0.1, fused=True)


def test_fused_needs_cuda_outside_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA"):
        AdamP([torch.zeros(2, 2, requires_grad=True)], fused=True)


def test_cpu_parameters_do_not_take_the_fused_path_by_default(monkeypatch):
    """On the CPU the default is the per-tensor path: Triton is never called."""

    def refuse(*args, **kwargs):
        raise AssertionError("the fused path ran on CPU parameters by default")

    monkeypatch.setattr("adamp._fused.fused_adamp", refuse)
    p = torch.randn(3, 3, requires_grad=True)
    p.grad = torch.randn(3, 3)
    before = p.detach().clone()
    AdamP([p]).step()
    assert not torch.equal(p.detach(), before)
