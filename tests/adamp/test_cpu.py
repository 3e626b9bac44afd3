"""The default CPU path (``adamp._cpu``): taken where it should be, with the numbers of the
plain per-tensor path, and left for that path where torch's kernels cannot take a tensor.

The differential tests against the reference release run this path too (the
``cpu-kernels`` case of ``EVERY_CPU_PATH``); here is what they cannot show: which path ran.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import adamp._single_tensor
from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION, SGDP, AdamP
from tests.adamp.helpers import (
    assert_all_close,
    assert_close,
    clone_params,
    codes_of,
    make_params,
    set_grads,
)

CASES = [
    (AdamP, {"lr": 2e-2, "weight_decay": 0.1, "wd_ratio": 0.3}),
    (AdamP, {"lr": 1e-2, "betas": (0.8, 0.99), "maximize": True, "delta": 0.2}),
    (SGDP, {"lr": 3e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    (SGDP, {"lr": 1e-2, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.1}),
    (SGDP, {"lr": 1e-2, "momentum": 0.9, "maximize": True, "weight_decay": 0.01}),
    (SGDP, {"lr": 5e-2, "weight_decay": 0.1}),
]
CASE_IDS = [
    "AdamP-decay",
    "AdamP-maximize",
    "SGDP-nesterov",
    "SGDP-dampening",
    "SGDP-maximize",
    "SGDP-no-momentum",
]
PER_TENSOR = {AdamP: "single_tensor_adamp", SGDP: "single_tensor_sgdp"}


def _count_per_tensor_steps(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[str]:
    """Record every parameter ``cls``'s plain per-tensor step is given (it still runs)."""
    module, name = adamp._single_tensor, PER_TENSOR[cls]
    plain = getattr(module, name)
    calls: list[str] = []

    def counted(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        calls.extend(str(tuple(p.shape)) for p in params)
        plain(params, *args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_default_cpu_path_takes_every_tensor_and_matches_per_tensor(
    monkeypatch, cls, options, dtype
):
    """By default no tensor takes the plain path, every view of the test is exercised,
    and the numbers are the plain path's (float64: to 1e-12; float32: to rounding)."""
    plain = make_params(dtype)
    ours = clone_params(plain)
    opt = cls(ours.values(), **options)
    reference = cls(plain.values(), foreach=False, **options)
    gen = torch.Generator().manual_seed(1)
    seen: set[int] = set()
    for step in range(8):
        set_grads(plain, [ours], step, gen)
        calls = _count_per_tensor_steps(monkeypatch, cls)
        opt.step()
        assert calls == [], "the default CPU step fell back to the per-tensor path"
        monkeypatch.undo()
        reference.step()
        codes = codes_of(opt, ours)
        assert codes == codes_of(reference, plain), f"step {step}"
        seen |= set(codes.values())
    assert seen == {NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW}
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert_all_close(ours, plain, tol, "params")
    for name in ours:
        for key in cls.MOMENT_KEYS:
            # Relative to the tensor's size: a projected SGDP buffer holds differences of
            # nearly equal numbers, whose last bits no two orders of operations share.
            assert_close(opt.state[ours[name]][key], reference.state[plain[name]][key], tol, key)


@pytest.mark.parametrize(
    ("cls", "options", "why"),
    [
        (AdamP, {"lr": 1e-2, "nesterov": True}, "nesterov"),
        (AdamP, {"lr": 1e-2, "fused": False}, "fused=False"),
        (SGDP, {"lr": 1e-2, "momentum": 0.9, "foreach": False}, "foreach=False"),
    ],
    ids=["AdamP-nesterov", "AdamP-fused-false", "SGDP-foreach-false"],
)
def test_what_the_kernels_do_not_take_runs_the_per_tensor_path(monkeypatch, cls, options, why):
    calls = _count_per_tensor_steps(monkeypatch, cls)
    params = make_params(torch.float32)
    opt = cls(params.values(), **options)
    set_grads(params, [], 0, torch.Generator().manual_seed(0))
    opt.step()
    assert len(calls) == len(params), why


def test_a_gradient_in_another_layout_takes_the_per_tensor_path_with_the_same_numbers(
    monkeypatch,
):
    """torch's CPU kernels walk tensors in memory order: a transposed gradient must not
    reach them (it would be paired with the wrong weights)."""
    calls = _count_per_tensor_steps(monkeypatch, AdamP)
    w = {"w": (0.1 * torch.randn(6, 4)).requires_grad_()}
    plain = clone_params(w)
    opts = [AdamP(w.values(), lr=1e-2), AdamP(plain.values(), lr=1e-2, foreach=False)]
    g = torch.randn(4, 6).t()
    w["w"].grad, plain["w"].grad = g, g.contiguous()
    for opt in opts:
        opt.step()
    assert calls == ["(6, 4)", "(6, 4)"]  # both optimizers: the layout sent ours there too
    assert_all_close(w, plain, 1e-6, "params")


@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_bf16_parameters_take_the_cpu_path_in_float32(monkeypatch, cls):
    options = {"lr": 0.1, "weight_decay": 0.1} | ({"momentum": 0.9} if cls is SGDP else {})
    calls = _count_per_tensor_steps(monkeypatch, cls)
    low = {n: p.detach().bfloat16().requires_grad_() for n, p in make_params().items()}
    opt = cls(low.values(), **options)
    before = {n: p.detach().clone() for n, p in low.items()}
    set_grads(low, [], 0, torch.Generator().manual_seed(0))
    opt.step()
    assert calls == []
    assert all(opt.state[p][cls.MOMENT_KEYS[0]].dtype == torch.float32 for p in low.values())
    assert all(not torch.equal(p, before[n]) for n, p in low.items())


def test_the_cpu_path_reuses_one_scratch_buffer() -> None:
    """The update of each weight goes through memory kept between steps: no
    parameter-sized allocation per tensor per step."""
    params = make_params(torch.float32)
    opt = AdamP(params.values(), lr=1e-2)
    set_grads(params, [], 0, torch.Generator().manual_seed(0))
    opt.step()
    scratch = opt.__dict__["_scratch"][(torch.device("cpu"), torch.float32)]
    pointer = scratch.data_ptr()
    set_grads(params, [], 1, torch.Generator().manual_seed(1))
    opt.step()
    assert opt.__dict__["_scratch"][(torch.device("cpu"), torch.float32)].data_ptr() == pointer
    assert scratch.numel() == max(p.numel() for p in params.values())


def test_a_torch_without_the_cpu_kernels_steps_on_the_plain_path(monkeypatch):
    """The kernels are private torch API: where they are missing (or CUDA-only, as before
    torch 2.4), the default CPU step is the plain per-tensor one, not an error."""
    monkeypatch.setattr("adamp._cpu.cpu_kernels_available", lambda: False)
    calls = _count_per_tensor_steps(monkeypatch, AdamP)
    params = make_params(torch.float32)
    opt = AdamP(params.values(), lr=1e-2)
    set_grads(params, [], 0, torch.Generator().manual_seed(0))
    opt.step()
    assert len(calls) == len(params)
