"""``scale_invariant_fraction()``: the share, by elements, of the multi-dimensional weights
that the last step projected, as a 0-dim float32 tensor computed without a host sync."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION, SGDP, AdamP
from tests.adamp.helpers import EVERY_CPU_PATH, make_grad

OPTIMIZERS = [(AdamP, {"lr": 1e-2}), (SGDP, {"lr": 0.1, "momentum": 0.9})]
IDS = ["AdamP", "SGDP"]


def _check_tensor(fraction, device):
    assert isinstance(fraction, torch.Tensor)
    assert fraction.shape == ()
    assert fraction.dtype == torch.float32
    assert fraction.device.type == device


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS, ids=IDS)
def test_zero_before_the_first_step(cls, options):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = cls(model.parameters(), **options)
    fraction = opt.scale_invariant_fraction()
    _check_tensor(fraction, "cpu")
    assert fraction.item() == 0.0


def _normalized_model():
    """Every weight with two or more dimensions is followed by a BatchNorm. (Weights of
    162, 216, 80 and 35 elements: shares of the total that do not add up to exactly 1 in
    float32, so the fraction must not be a float32 sum of shares.)"""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 5, bias=False),
        nn.BatchNorm1d(5),
        nn.Linear(5, 7, bias=False),
        nn.BatchNorm1d(7),
    )


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS, ids=IDS)
def test_one_when_every_weight_is_scale_invariant(cls, options, foreach):
    torch.manual_seed(0)
    model = _normalized_model()
    opt = cls(model.parameters(), foreach=foreach, **options)
    for _ in range(3):
        opt.zero_grad()
        x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 7, (8,))
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        fraction = opt.scale_invariant_fraction()
        _check_tensor(fraction, "cpu")
        assert fraction.item() == 1.0
        for p in model.parameters():
            if p.dim() > 1:
                assert opt.state[p]["projection"].item() == CHANNEL_VIEW


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS, ids=IDS)
def test_element_weighted_fraction_in_a_mixed_case(cls, options, foreach):
    gen = torch.Generator().manual_seed(1)
    shapes = {"a": (8, 3, 3, 3), "b": (10, 7), "c": (4, 5), "bias": (50,), "norm": (300,)}
    params = {
        n: torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_()
        for n, s in shapes.items()
    }
    opt = cls(params.values(), foreach=foreach, **options)
    sizes = {"a": 216, "b": 70, "c": 20}
    for kinds, projected in (
        ({"a": "channel", "b": "layer", "c": "none"}, ("a", "b")),
        ({"a": "none", "b": "none", "c": "channel"}, ("c",)),
        ({"a": "layer", "b": "none", "c": "layer"}, ("a", "c")),
    ):
        for name, p in params.items():
            p.grad = make_grad(p, kinds.get(name, "random"), gen)
        opt.step()
        codes = {n: opt.state[params[n]]["projection"].item() for n in kinds}
        expected_codes = {"channel": CHANNEL_VIEW, "layer": LAYER_VIEW, "none": NO_PROJECTION}
        assert codes == {n: expected_codes[k] for n, k in kinds.items()}
        fraction = opt.scale_invariant_fraction()
        _check_tensor(fraction, "cpu")
        # Biases and norm parameters (one dimension) count neither way.
        expected = sum(sizes[n] for n in projected) / sum(sizes.values())
        assert fraction.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS, ids=IDS)
def test_computed_on_the_parameters_device_without_sync(cls, options):
    """On the meta device no value can be read: the fraction is still a 0-dim float32
    tensor there, so computing it never waits for the device."""
    params = [
        torch.empty(6, 3, 3, 3, device="meta", requires_grad=True),
        torch.empty(5, 4, device="meta", requires_grad=True),
        torch.empty(6, device="meta", requires_grad=True),
    ]
    opt = cls(params, **options)
    _check_tensor(opt.scale_invariant_fraction(), "meta")
    for p in params:
        p.grad = torch.empty_like(p)
    opt.step()
    _check_tensor(opt.scale_invariant_fraction(), "meta")
