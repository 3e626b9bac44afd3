"""The built-in workloads do what their descriptions promise."""

from __future__ import annotations

import math

import pytest
import torch

from workers.builtin.digits_cnn import build_model
from workers.builtin.synthetic import loss_of
from workers.optimizers import OPTIMIZERS, build_optimizer, python_snippet
from workers.registry import get_workload
from workers.runner import Finished, Placement, Report, TrialRequest, run_trial

PLACE = Placement("node", "127.0.0.1", "host", 1)


def _digits(optimizer: str, knobs: dict, epochs: int = 6) -> list:
    args = {"epochs": epochs, "batch_size": 64, "width": 16, "schedule": "cosine"}
    return list(run_trial(TrialRequest(1, 0, "digits-cnn", optimizer, knobs, args, seed=0), PLACE))


@pytest.mark.parametrize(
    ("optimizer", "knobs"),
    [
        ("adamp", {"lr": 3e-3, "weight_decay": 1e-4}),
        ("sgdp", {"lr": 0.1, "weight_decay": 1e-4}),
        ("adamw", {"lr": 3e-3}),
    ],
)
def test_digits_cnn_learns_and_reports_each_epoch(optimizer: str, knobs: dict) -> None:
    events = _digits(optimizer, knobs)
    reports = [e for e in events if isinstance(e, Report)]
    assert [r.step for r in reports] == list(range(6))
    assert isinstance(events[-1], Finished)
    assert events[-1].value > 0.9, "a reasonable configuration reaches 90% on the digits"
    assert reports[-1].value > reports[0].value
    if OPTIMIZERS[optimizer].projects:
        fraction = events[-1].scale_invariant_fraction
        assert fraction is not None
        # Every convolution is followed by BatchNorm: they are most of the weights.
        assert 0.5 < fraction <= 1.0
    else:
        assert events[-1].scale_invariant_fraction is None


def test_digits_cnn_convolutions_are_scale_invariant() -> None:
    """Scaling a convolution's weight leaves the training-mode output unchanged."""
    torch.manual_seed(0)
    model = build_model(8).train()
    images = torch.rand(32, 1, 8, 8)
    before = model(images)
    with torch.no_grad():
        model[0].weight.mul_(7.0)
    assert torch.allclose(model(images), before, atol=1e-4)


def test_synthetic_is_a_bowl_with_its_minimum_where_documented() -> None:
    best = {"lr": 3e-3, "delta": 0.1, "wd_ratio": 0.1}
    assert loss_of("adamp", best) == pytest.approx(0.0)
    for knob, other in [("lr", 3e-2), ("delta", 1.0), ("wd_ratio", 0.9)]:
        assert loss_of("adamp", {**best, knob: other}) > 0.1
    assert loss_of("sgd", {"lr": 0.3}) == pytest.approx(0.0)


def test_every_workload_has_a_default_space_for_every_optimizer() -> None:
    for name in ("digits-cnn", "synthetic"):
        workload = get_workload(name)
        for optimizer, spec in OPTIMIZERS.items():
            space = workload.default_space[optimizer]
            assert "lr" in space
            assert set(space) <= set(spec.knobs)
            for r in space.values():
                assert r.low < r.high
                assert not r.log or r.low > 0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_python_snippet_builds_the_same_optimizer(name: str) -> None:
    values = {"lr": 0.02, "weight_decay": 1e-4, "beta1": 0.85, "momentum": 0.8, "wd_ratio": 0.3}
    values = {k: v for k, v in values.items() if k in OPTIMIZERS[name].knobs}
    snippet = python_snippet(name, {**values, "epochs": 5})
    assert "epochs" not in snippet
    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    scope: dict = {"params": params}
    exec(snippet, scope)
    built = scope["optimizer"]
    expected = build_optimizer(name, [torch.nn.Parameter(torch.zeros(2, 2))], values)
    assert type(built) is type(expected)
    for key, value in expected.param_groups[0].items():
        if key != "params":
            assert built.param_groups[0][key] == value, key
    assert not math.isnan(built.param_groups[0]["lr"])
