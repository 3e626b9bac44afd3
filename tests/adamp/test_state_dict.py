"""Saving and loading optimizer state: our own round trip, state dicts written by the
reference release, and half-precision parameters whose state must stay float32."""

from __future__ import annotations

import io

import pytest
import torch

from adamp import SGDP, AdamP
from tests.adamp.helpers import (
    EVERY_CPU_PATH,
    NAMES,
    assert_all_close,
    clone_params,
    codes_of,
    make_params,
    set_grads,
)

ADAMP_OPTIONS = {"lr": 2e-2, "weight_decay": 0.1, "wd_ratio": 0.3, "nesterov": True}
SGDP_OPTIONS = {"lr": 3e-2, "momentum": 0.9, "weight_decay": 0.05, "wd_ratio": 0.2}
CASES = [
    (AdamP, ADAMP_OPTIONS),
    (AdamP, {**ADAMP_OPTIONS, "capturable": True}),
    (SGDP, SGDP_OPTIONS),
]
CASE_IDS = ["AdamP", "AdamP-capturable", "SGDP"]


def _steps(opts, params, first, last, seed=0):
    """Steps ``first`` to ``last - 1`` on the same gradients for each optimizer."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(last):
        if step < first:
            set_grads(params[0], [], step, gen)  # advance the generator
            continue
        set_grads(params[0], params[1:], step, gen)
        for opt in opts:
            opt.step()


def _saved_and_loaded(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_round_trip_continues_identically(cls, options, foreach):
    whole = make_params(torch.float64)
    first = clone_params(whole)
    uninterrupted = cls(whole.values(), foreach=foreach, **options)
    interrupted = cls(first.values(), foreach=foreach, **options)
    _steps([uninterrupted, interrupted], [whole, first], 0, 8)

    saved = _saved_and_loaded(interrupted.state_dict())
    resumed_params = clone_params(first)
    resumed = cls(resumed_params.values(), foreach=foreach, **options)
    resumed.load_state_dict(saved)
    for name in NAMES:
        state = resumed.state[resumed_params[name]]
        assert state["projection"].dtype == torch.uint8
        if "step" in state:
            assert state["step"].dtype == torch.float32
            assert state["step"].device == resumed_params[name].device
    assert codes_of(resumed, resumed_params) == codes_of(uninterrupted, whole)

    _steps([uninterrupted, resumed], [whole, resumed_params], 8, 16)
    for name in NAMES:
        assert torch.equal(whole[name], resumed_params[name]), name


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_reference_state_dict_continues_with_reference_numbers(reference, cls, options, foreach):
    """A state dict written by ``adamp==0.3.0`` (int step, no projection codes), through
    torch.save and torch.load, resumes in ours with the reference's numbers."""
    ref_options = {k: v for k, v in options.items() if k != "capturable"}
    ref_params = make_params(torch.float64, seed=2)
    ref = getattr(reference, cls.__name__)(ref_params.values(), **ref_options)
    _steps([ref], [ref_params], 0, 10, seed=3)
    saved = _saved_and_loaded(ref.state_dict())
    if cls is AdamP:
        assert isinstance(saved["state"][0]["step"], int)

    ours_params = clone_params(ref_params)
    ours = cls(ours_params.values(), **options)
    ours.load_state_dict(saved)
    for group in ours.param_groups:
        # The reference's groups lack our keys; they get the defaults, and we pick a path.
        assert group["maximize"] is False
        group["foreach"] = foreach
        group["capturable"] = options.get("capturable", False)
    if cls is AdamP:
        for p in ours_params.values():
            step = ours.state[p]["step"]
            assert torch.is_tensor(step)
            assert step.item() == 10

    _steps([ref, ours], [ref_params, ours_params], 10, 20, seed=3)
    assert_all_close(ours_params, ref_params, 1e-10, "resumed")
    for name in NAMES:
        for key in cls.MOMENT_KEYS:
            mine, theirs = ours.state[ours_params[name]][key], ref.state[ref_params[name]][key]
            assert_all_close({key: mine}, {key: theirs}, 1e-10, name)


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_half_precision_state_stays_float32_through_load(cls, options, dtype, foreach):
    whole = {n: p.detach().to(dtype).requires_grad_() for n, p in make_params().items()}
    first = clone_params(whole)
    uninterrupted = cls(whole.values(), foreach=foreach, **options)
    interrupted = cls(first.values(), foreach=foreach, **options)
    _steps([uninterrupted, interrupted], [whole, first], 0, 5)

    saved = _saved_and_loaded(interrupted.state_dict())
    resumed_params = clone_params(first)
    resumed = cls(resumed_params.values(), foreach=foreach, **options)
    resumed.load_state_dict(saved)
    for index, name in enumerate(NAMES):
        state = resumed.state[resumed_params[name]]
        for key in cls.MOMENT_KEYS:
            assert state[key].dtype == torch.float32, (name, key)
            # Not rounded through the parameters' dtype on the way in.
            assert torch.equal(state[key], saved["state"][index][key]), (name, key)
        assert state["projection"].dtype == torch.uint8

    _steps([uninterrupted, resumed], [whole, resumed_params], 5, 10)
    for name in NAMES:
        assert torch.equal(whole[name], resumed_params[name]), name
        for key in cls.MOMENT_KEYS:
            assert resumed.state[resumed_params[name]][key].dtype == torch.float32
            assert torch.equal(
                resumed.state[resumed_params[name]][key], uninterrupted.state[whole[name]][key]
            )
