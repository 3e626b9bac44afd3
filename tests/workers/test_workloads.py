"""The built-in workloads do what their descriptions promise."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.builtin import mnist1d_cnn
from workers.builtin.classifier import weight_norm
from workers.builtin.digits_cnn import build_model
from workers.builtin.synthetic import loss_of
from workers.context import TrialContext
from workers.messages import Finished, Placement, Report, TrialRequest
from workers.optimizer_specs import OPTIMIZERS, python_snippet
from workers.optimizers import build_optimizer
from workers.registry import get_workload
from workers.runner import run_trial

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
    # The trial records its seed and the norm of its scale-invariant weights over training.
    attrs = events[-1].user_attrs
    assert attrs["seed"] == 0
    norms = attrs["weight_norms"]
    assert len(norms) == 7, "at initialisation and after each of the 6 epochs"
    assert norms[0] == pytest.approx(weight_norm(build_model(16)), rel=0.5)
    assert norms[-1] != norms[0]


def test_trial_attributes_are_bounded() -> None:
    ctx = TrialContext("adamw", {}, {}, 0, torch.device("cpu"), emit=lambda _: None)
    ctx.set_user_attr("weight_norms", [1.0, 2.0])
    ctx.set_user_attr("weight_norms", [3.0])  # replaced, not added
    assert ctx.user_attrs == {"weight_norms": [3.0]}
    with pytest.raises(ValueError, match="at most 16,384"):
        ctx.set_user_attr("big", [0.123456789] * 5000)
    with pytest.raises(ValueError, match="1 to 64 characters"):
        ctx.set_user_attr("", 1)
    for i in range(15):
        ctx.set_user_attr(f"k{i}", i)
    with pytest.raises(ValueError, match="at most 16 user attributes"):
        ctx.set_user_attr("one-too-many", 1)


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
    for name in ("digits-cnn", "mnist1d-cnn", "synthetic"):
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


@pytest.fixture
def mnist1d_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory for MNIST-1D and no data set remembered in memory."""
    monkeypatch.setenv("ADAMP_TUNE_CACHE_DIR", str(tmp_path))
    mnist1d_cnn._dataset.cache_clear()
    yield tmp_path / "mnist1d"
    mnist1d_cnn._dataset.cache_clear()


def _mnist1d(optimizer: str, knobs: dict, **args: object) -> list:
    spec = get_workload("mnist1d-cnn").args
    full = {k: args.get(k, s.default) for k, s in spec.items()}
    request = TrialRequest(1, 0, "mnist1d-cnn", optimizer, knobs, full, seed=0)
    return list(run_trial(request, PLACE))


@pytest.mark.usefixtures("mnist1d_cache")
def test_mnist1d_cnn_default_budget_reaches_cnn_level_short_of_the_ceiling() -> None:
    """The published CNN reaches about 94%; the default budget gets there, not to 100%."""
    events = _mnist1d("adamp", {"lr": 1e-2, "weight_decay": 1e-4})
    reports = [e for e in events if isinstance(e, Report)]
    assert [r.step for r in reports] == list(range(20)), "a report per epoch"
    final = events[-1]
    assert isinstance(final, Finished)
    assert 0.92 < final.value < 0.99
    assert final.scale_invariant_fraction is not None
    # The three convolutions are BatchNorm'ed; only the linear head is not.
    assert 0.6 < final.scale_invariant_fraction < 0.95


@pytest.mark.usefixtures("mnist1d_cache")
def test_mnist1d_cnn_tiny_budget_learns_with_a_baseline_optimizer() -> None:
    events = _mnist1d("adamw", {"lr": 1e-2}, epochs=4, num_samples=2000, width=16, batch_size=32)
    reports = [e for e in events if isinstance(e, Report)]
    assert len(reports) == 4
    assert isinstance(events[-1], Finished)
    assert events[-1].value > 0.4, "far above chance (10%) after four short epochs"
    assert events[-1].scale_invariant_fraction is None


def test_mnist1d_data_are_generated_once_and_cached_on_disk(
    mnist1d_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    first = mnist1d_cnn.load_arrays(500, 3)
    assert (random.random(), np.random.rand()) == expected, "the global generators are untouched"
    assert first["x_train"].shape == (400, 40)
    assert first["x_val"].shape == (100, 40)
    assert set(first["y_train"].tolist()) == set(range(10))
    files = list(mnist1d_cache.glob("*.npz"))
    assert len(files) == 1
    assert not list(mnist1d_cache.glob("*.tmp")), "no temporary file is left behind"
    assert files[0].stat().st_mode & 0o044 == 0o044, "readable by the node's other users"

    def no_generation(num_samples: int, seed: int) -> dict:
        raise AssertionError("generated again although cached")

    monkeypatch.setattr(mnist1d_cnn, "_generate", no_generation)
    again = mnist1d_cnn.load_arrays(500, 3)
    for name, array in first.items():
        np.testing.assert_array_equal(again[name], array)
    with pytest.raises(AssertionError, match="generated again"):
        mnist1d_cnn.load_arrays(500, 4)  # other arguments, another file


def test_mnist1d_generation_is_deterministic_and_a_damaged_cache_is_replaced(
    mnist1d_cache: Path,
) -> None:
    first = mnist1d_cnn.load_arrays(300, 11)
    (path,) = mnist1d_cache.glob("*.npz")
    path.write_bytes(b"truncated")
    second = mnist1d_cnn.load_arrays(300, 11)
    for name, array in first.items():
        np.testing.assert_array_equal(second[name], array)
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["x_val"], first["x_val"])
    other = mnist1d_cnn.load_arrays(300, 12)
    assert not np.array_equal(other["x_train"], first["x_train"]), "the seed changes the data"


def test_mnist1d_cnn_convolutions_are_scale_invariant() -> None:
    torch.manual_seed(0)
    model = mnist1d_cnn.build_model(8).train()
    signals = torch.randn(32, 1, 40)
    before = model(signals)
    assert before.shape == (32, 10)
    with torch.no_grad():
        for index in (0, 3, 6):
            model[index].weight.mul_(5.0)
    assert torch.allclose(model(signals), before, atol=1e-4)
