"""Differential tests: our AdamP and SGDP against the reference release ``adamp==0.3.0``.

Both optimizers get the same gradients for many steps; the parameters, the moments and
every projection decision must agree. The gradients are built so that each weight is, in
turn, scale-invariant per output channel, scale-invariant only as a whole, clearly not
scale-invariant, or random, so that every branch of the projection is exercised; which
branch each side took is checked, not assumed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import adamp
from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION
from tests.adamp.helpers import (
    EVERY_CPU_PATH,
    NAMES,
    WEIGHTS,
    assert_all_close,
    assert_close,
    clone_params,
    codes_of,
    expected_code,
    make_grad,
    make_params,
    param_groups,
    set_grads,
    tolerance,
    trace_reference,
)

STEPS = 30
CONVS = ("conv3d", "conv2d", "conv1d")
MATRICES = ("linear", "row", "column")
VECTORS = ("bias", "norm_weight", "norm_bias")

ADAMP_CONFIGS: dict[str, tuple[dict[str, Any], list[tuple[tuple[str, ...], dict[str, Any]]]]] = {
    "defaults": ({"lr": 1e-2}, [(NAMES, {})]),
    "nesterov-decay": (
        {
            "lr": 2e-2,
            "betas": (0.8, 0.99),
            "eps": 1e-6,
            "weight_decay": 0.1,
            "delta": 0.2,
            "wd_ratio": 0.5,
            "nesterov": True,
        },
        [(NAMES, {})],
    ),
    "beta1-zero-wd-ratio-zero": (
        {"lr": 3e-2, "betas": (0.0, 0.9), "weight_decay": 0.05, "wd_ratio": 0.0, "delta": 0.5},
        [(NAMES, {})],
    ),
    "groups": (
        {"lr": 1e-2, "weight_decay": 0.01},
        [
            (CONVS, {"nesterov": True, "weight_decay": 0.2, "wd_ratio": 0.3}),
            (MATRICES, {"lr": 2e-2, "delta": 0.05, "betas": (0.85, 0.95), "eps": 1e-5}),
            (VECTORS, {"weight_decay": 0.0, "lr": 5e-3}),
        ],
    ),
}

SGDP_CONFIGS: dict[str, tuple[dict[str, Any], list[tuple[tuple[str, ...], dict[str, Any]]]]] = {
    "plain": ({"lr": 5e-2}, [(NAMES, {})]),
    "nesterov-decay": (
        {
            "lr": 2e-2,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 0.1,
            "wd_ratio": 0.2,
            "eps": 1e-6,
        },
        [(NAMES, {})],
    ),
    "dampening": (
        {"lr": 3e-2, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.05, "delta": 0.3},
        [(NAMES, {})],
    ),
    "groups": (
        {"lr": 2e-2, "momentum": 0.9},
        [
            (CONVS, {"nesterov": True, "weight_decay": 0.1, "wd_ratio": 0.0}),
            (MATRICES, {"lr": 4e-2, "momentum": 0.7, "dampening": 0.1, "delta": 0.05}),
            (VECTORS, {"weight_decay": 0.02, "momentum": 0.0}),
        ],
    ),
}

CASES = [("AdamP", name) for name in ADAMP_CONFIGS] + [("SGDP", name) for name in SGDP_CONFIGS]


def _config(optimizer: str, name: str):
    return (ADAMP_CONFIGS if optimizer == "AdamP" else SGDP_CONFIGS)[name]


def _compare_state(ours, ref, ours_params, ref_params, tol, step):
    for name in ours_params:
        mine, theirs = ours.state[ours_params[name]], ref.state[ref_params[name]]
        for key, value in theirs.items():
            if key == "step":
                assert mine["step"].item() == value, f"step {step} {name}: step count"
            else:
                assert mine[key].dtype == value.dtype
                assert_close(mine[key], value, tol, f"step {step} {name} state {key}")


def _run_against_reference(reference, optimizer, config, dtype, foreach, **ours_only):
    defaults, layout = _config(optimizer, config)
    ours_params = make_params(dtype, seed=1)
    ref_params = clone_params(ours_params)
    ours = getattr(adamp, optimizer)(
        param_groups(ours_params, layout), foreach=foreach, **defaults, **ours_only
    )
    ref = getattr(reference, optimizer)(param_groups(ref_params, layout), **defaults)
    ref_codes = trace_reference(ref)
    tol = tolerance(dtype)
    gen = torch.Generator().manual_seed(2)
    seen = set()

    for step in range(STEPS):
        kinds = set_grads(ours_params, [ref_params], step, gen)
        ours.step()
        ref.step()

        codes = codes_of(ours, ours_params)
        for name in WEIGHTS:
            expected = expected_code(name, kinds[name])
            if expected is not None:
                assert codes[name] == expected, f"step {step} {name} ({kinds[name]} gradient)"
            assert codes[name] == ref_codes[id(ref_params[name])], (
                f"step {step} {name}: the reference took another branch"
            )
            seen.add(codes[name])
        assert all(codes[name] == NO_PROJECTION for name in NAMES if name not in WEIGHTS)
        # Parameters after every step: a branch taken differently shows at once.
        assert_all_close(ours_params, ref_params, tol, f"step {step}")

    assert seen == {NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW}
    _compare_state(ours, ref, ours_params, ref_params, tol, STEPS)


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("optimizer", "config"), CASES, ids=[f"{o}-{c}" for o, c in CASES])
def test_matches_reference_step_by_step(reference, optimizer, config, dtype, foreach):
    _run_against_reference(reference, optimizer, config, dtype, foreach)


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("config", list(ADAMP_CONFIGS))
def test_capturable_adamp_matches_reference(reference, config, dtype, foreach):
    """Step counts on the device (``capturable=True``) give the reference's numbers too."""
    _run_against_reference(reference, "AdamP", config, dtype, foreach, capturable=True)


@EVERY_CPU_PATH
@pytest.mark.parametrize(("optimizer", "config"), CASES, ids=[f"{o}-{c}" for o, c in CASES])
def test_parameters_without_gradient_are_skipped_like_reference(
    reference, optimizer, config, foreach
):
    """Parameters whose ``grad`` is None at some steps: skipped, their step counts (and so
    AdamP's bias corrections) fall behind the others', as in the reference."""
    defaults, layout = _config(optimizer, config)
    ours_params = make_params(torch.float64, seed=9)
    ref_params = clone_params(ours_params)
    ours = getattr(adamp, optimizer)(param_groups(ours_params, layout), foreach=foreach, **defaults)
    ref = getattr(reference, optimizer)(param_groups(ref_params, layout), **defaults)
    gen = torch.Generator().manual_seed(10)
    for step in range(12):
        set_grads(ours_params, [ref_params], step, gen)
        for index, name in enumerate(NAMES):
            if (step + index) % 3 == 0 or (name == "conv1d" and step < 5):
                ours_params[name].grad = None
                ref_params[name].grad = None
        ours.step()
        ref.step()
    assert_all_close(ours_params, ref_params, 1e-10, "params")
    _compare_state(ours, ref, ours_params, ref_params, 1e-10, 12)


@pytest.mark.parametrize("optimizer", ["AdamP", "SGDP"])
def test_reference_tracer_reports_the_branch_taken(reference, optimizer):
    """The tracer used above reads the reference's decisions right: gradients built for
    each branch are reported as that branch, and projected weights get ``wd_ratio``."""
    for name in ("conv2d", "linear", "column", "row"):
        for kind in ("channel", "layer", "none"):
            p = make_params(torch.float64, seed=3)[name]
            before = p.detach().clone()
            p.grad = make_grad(p, kind, torch.Generator().manual_seed(4))
            opt = getattr(reference, optimizer)([p], lr=0.5, weight_decay=1.0, wd_ratio=0.25)
            codes = trace_reference(opt)
            opt.step()
            assert codes[id(p)] == expected_code(name, kind), (name, kind)
            if optimizer == "SGDP" and kind != "none":
                # Projected SGDP with zero momentum: the update is the projected gradient,
                # orthogonal to the weight, so the decay factor is recoverable exactly.
                ratio = torch.linalg.vecdot(p.detach().flatten(), before.flatten()) / (
                    before.flatten().square().sum()
                )
                assert ratio.item() == pytest.approx(1 - 0.5 * 1.0 * 0.25, rel=1e-9)


class _Net(nn.Module):
    """Conv-BN-ReLU twice (scale-invariant convolutions), pooling, and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


MODEL_CASES = [
    ("AdamP", {"lr": 1e-2, "weight_decay": 1e-2, "nesterov": True}),
    ("SGDP", {"lr": 5e-2, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}),
]


@EVERY_CPU_PATH
@pytest.mark.parametrize(("optimizer", "options"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_small_model_trains_like_reference(reference, optimizer, options, foreach):
    torch.manual_seed(7)
    ours_model = _Net().double()
    ref_model = copy.deepcopy(ours_model)
    ours = getattr(adamp, optimizer)(ours_model.parameters(), foreach=foreach, **options)
    ref = getattr(reference, optimizer)(ref_model.parameters(), **options)
    ref_codes = trace_reference(ref)
    gen = torch.Generator().manual_seed(8)
    losses = []

    for step in range(8):
        x = torch.randn(16, 3, 8, 8, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 5, (16,), generator=gen)
        step_losses = []
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            step_losses.append(loss.item())
        losses.append(step_losses[0])
        assert step_losses[0] == pytest.approx(step_losses[1], rel=1e-10)

        for name, p in ours_model.named_parameters():
            ref_p = ref_model.get_parameter(name)
            assert_close(p, ref_p, 1e-10, f"step {step} {name}")
            if p.dim() > 1:
                code = int(ours.state[p]["projection"])
                assert code == ref_codes[id(ref_p)], f"step {step} {name}"
                if name.startswith("conv"):
                    # BatchNorm makes each output channel of the convolution scale-invariant.
                    assert code == CHANNEL_VIEW, f"step {step} {name}"
    assert losses[-1] < losses[0]
