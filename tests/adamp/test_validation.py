"""Bad arguments fail at construction with a message naming them; defaults are the
reference release's."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.optim.optimizer import required

import adamp
from adamp import SGDP, AdamP
from tests.adamp.helpers import EVERY_CPU_PATH


def _params():
    return [torch.zeros(3, 2, requires_grad=True), torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"eps": -1e-8}, "eps"),
        ({"delta": -0.1}, "delta"),
        ({"weight_decay": -1e-2}, "weight_decay"),
        ({"wd_ratio": -0.1}, "wd_ratio"),
        ({"wd_ratio": 1.1}, "wd_ratio"),
        ({"betas": (-0.1, 0.999)}, "beta1"),
        ({"betas": (1.0, 0.999)}, "beta1"),
        ({"betas": (0.9, 1.0)}, "beta2"),
        ({"betas": (0.9, -0.5)}, "beta2"),
        ({"betas": (0.9,)}, "betas"),
    ],
)
def test_adamp_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamP(_params(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "lr"),
        ({"lr": 0.1, "eps": -1e-8}, "eps"),
        ({"lr": 0.1, "delta": -0.1}, "delta"),
        ({"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
        ({"lr": 0.1, "wd_ratio": -0.1}, "wd_ratio"),
        ({"lr": 0.1, "wd_ratio": 2.0}, "wd_ratio"),
        ({"lr": 0.1, "momentum": -0.1}, "momentum"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "nesterov": True}, "[Nn]esterov"),
        ({"lr": 0.1, "nesterov": True, "momentum": 0.9, "dampening": 0.1}, "[Nn]esterov"),
    ],
)
def test_sgdp_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGDP(_params(), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0, "eps": 0.0, "delta": 0.0, "weight_decay": 0.0, "wd_ratio": 0.0},
        {"wd_ratio": 1.0, "betas": (0.0, 0.0)},
    ],
)
def test_adamp_accepts_the_edges_of_the_ranges(kwargs):
    AdamP(_params(), **kwargs)


def test_sgdp_accepts_the_edges_of_the_ranges():
    SGDP(_params(), lr=0.0, momentum=0.0, dampening=1.0, wd_ratio=1.0, eps=0.0, delta=0.0)
    SGDP(_params(), lr=0.1, momentum=0.9, nesterov=True)


def test_sgdp_requires_lr():
    with pytest.raises(ValueError, match="lr"):
        SGDP(_params())
    # Per-group lrs are enough.
    opt = SGDP([{"params": _params()[:1], "lr": 0.1}, {"params": _params()[1:], "lr": 0.2}])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]


def _sparse_grad_step(cls, foreach):
    dense = torch.zeros(4, 3, requires_grad=True)
    opt = cls([dense], lr=0.1, foreach=foreach)
    dense.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (4, 3), check_invariants=True)
    opt.step()


@EVERY_CPU_PATH
@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_sparse_gradients_raise(cls, foreach):
    with pytest.raises(RuntimeError, match="sparse"):
        _sparse_grad_step(cls, foreach)


def _shared_defaults(ours, theirs):
    ours_sig, ref_sig = inspect.signature(ours), inspect.signature(theirs)
    shared = [n for n in ref_sig.parameters if n not in ("self", "params")]
    return ours_sig, ref_sig, shared


@pytest.mark.parametrize("name", ["AdamP", "SGDP"])
def test_constructor_defaults_and_order_match_reference(reference, name):
    ours, theirs = getattr(adamp, name), getattr(reference, name)
    ours_sig, ref_sig, shared = _shared_defaults(ours, theirs)
    assert shared
    # Positional arguments in the reference's order, so positional calls mean the same.
    assert list(ours_sig.parameters)[: len(shared) + 1] == ["params", *shared]
    for arg in shared:
        ref_default = ref_sig.parameters[arg].default
        our_default = ours_sig.parameters[arg].default
        if ref_default is required:
            assert our_default is required, arg
        else:
            assert our_default == ref_default, arg
            assert type(our_default) is type(ref_default), arg
    # What we add is keyword-only.
    for arg in list(ours_sig.parameters)[len(shared) + 1 :]:
        assert ours_sig.parameters[arg].kind is inspect.Parameter.KEYWORD_ONLY, arg


@pytest.mark.parametrize(("name", "lr"), [("AdamP", None), ("SGDP", 0.1)])
def test_group_defaults_match_reference(reference, name, lr):
    kwargs = {} if lr is None else {"lr": lr}
    ours = getattr(adamp, name)(_params(), **kwargs)
    ref = getattr(reference, name)(_params(), **kwargs)
    for key, value in ref.defaults.items():
        assert ours.defaults[key] == value, key
    assert ours.defaults["maximize"] is False
    assert ours.defaults["foreach"] is None
    assert ours.defaults["capturable"] is False
