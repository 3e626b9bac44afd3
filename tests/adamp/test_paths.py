"""The ways of running a step agree: multi-tensor and per-tensor, capturable or not,
compiled or eager, maximizing, under an LR scheduler or a GradScaler, in half precision,
and on the ``meta`` device (which proves that a step never reads a device value).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION, SGDP, AdamP
from tests.adamp.helpers import (
    EVERY_CPU_PATH,
    NAMES,
    assert_all_close,
    assert_close,
    clone_params,
    codes_of,
    make_params,
    set_grads,
)

ADAMP_OPTIONS = {"lr": 2e-2, "weight_decay": 0.1, "wd_ratio": 0.3, "nesterov": True}
SGDP_OPTIONS = {"lr": 3e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}
CASES = [(AdamP, ADAMP_OPTIONS), (SGDP, SGDP_OPTIONS), (AdamP, {"lr": 1e-2}), (SGDP, {"lr": 1e-2})]
CASE_IDS = ["AdamP-all-flags", "SGDP-all-flags", "AdamP-plain", "SGDP-plain"]


def _lockstep(opts, params, steps, seed=0, skip=None, scale=1.0):
    """Step every optimizer in ``opts`` (over the mappings ``params``) on the same gradients;
    ``skip(step)`` names parameters left without a gradient at that step."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        set_grads(params[0], params[1:], step, gen, scale=scale)
        if skip is not None:
            for name in skip(step):
                for mapping in params:
                    mapping[name].grad = None
        for opt in opts:
            opt.step()


@pytest.mark.parametrize(("cls", "options"), CASES, ids=CASE_IDS)
def test_foreach_and_per_tensor_agree(cls, options):
    multi = make_params(torch.float64)
    single = clone_params(multi)
    opts = [cls(multi.values(), foreach=True, **options)]
    opts.append(cls(single.values(), foreach=False, **options))
    # Some parameters miss steps, so their step counts (and AdamP's step sizes) differ.
    _lockstep(opts, [multi, single], 20, skip=lambda s: ["conv2d", "bias"] if s % 3 == 0 else [])
    assert_all_close(multi, single, 1e-12, "params")
    assert codes_of(opts[0], multi) == codes_of(opts[1], single)
    for name in NAMES:
        for key, value in opts[1].state[single[name]].items():
            mine = opts[0].state[multi[name]][key]
            assert mine.dtype == value.dtype
            assert mine.device == value.device
            if key == "projection":
                assert torch.equal(mine, value), name
            else:
                assert_close(mine, value, 1e-12, f"{name} {key}")


@pytest.mark.parametrize(("cls", "options"), CASES[:2], ids=CASE_IDS[:2])
def test_foreach_groups_mixed_dtypes_like_per_tensor(cls, options):
    """One group holding float64, float32 and bfloat16 parameters."""
    dtypes = [torch.float64, torch.float32, torch.bfloat16]
    base = make_params(torch.float64)
    multi = {
        n: p.detach().to(dtypes[i % 3]).requires_grad_() for i, (n, p) in enumerate(base.items())
    }
    single = clone_params(multi)
    opts = [cls(multi.values(), foreach=True, **options)]
    opts.append(cls(single.values(), foreach=False, **options))
    _lockstep(opts, [multi, single], 10)
    for name in NAMES:
        assert multi[name].dtype == single[name].dtype
        tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2}[multi[name].dtype]
        assert_close(multi[name], single[name], tol, name)


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_capturable_gives_the_same_numbers(dtype, foreach):
    plain = make_params(dtype)
    captured = clone_params(plain)
    opts = [
        AdamP(plain.values(), foreach=foreach, **ADAMP_OPTIONS),
        AdamP(captured.values(), foreach=foreach, capturable=True, **ADAMP_OPTIONS),
    ]
    _lockstep(opts, [plain, captured], 20, skip=lambda s: ["linear"] if s % 4 == 1 else [])
    tol = {torch.float64: 1e-12, torch.float32: 4e-7}[dtype]
    assert_all_close(captured, plain, tol, "params")
    for name in NAMES:
        step = opts[1].state[captured[name]]["step"]
        assert step.dtype == torch.float32
        assert step.device == captured[name].device
        assert step.item() == opts[0].state[plain[name]]["step"].item()


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), CASES[:2], ids=CASE_IDS[:2])
def test_maximize_equals_minimizing_the_negated_loss(cls, options, foreach):
    up = make_params(torch.float64)
    down = clone_params(up)
    target = torch.Generator().manual_seed(0)
    targets = {
        n: torch.randn(p.shape, generator=target, dtype=torch.float64) for n, p in up.items()
    }
    opt_up = cls(up.values(), maximize=True, foreach=foreach, **options)
    opt_down = cls(down.values(), foreach=foreach, **options)

    def objective(params):
        return sum(((p - targets[n]) ** 2).sum() for n, p in params.items())

    start = objective(up).item()
    for _ in range(10):
        opt_up.zero_grad()
        (-objective(up)).backward()  # maximizing -f ...
        opt_up.step()
        opt_down.zero_grad()
        objective(down).backward()  # ... is minimizing f
        opt_down.step()
    for name in NAMES:
        assert torch.equal(up[name], down[name]), name
    assert objective(up).item() < start


def _meta_params():
    return {n: p.detach().to("meta").requires_grad_() for n, p in make_params().items()}


@EVERY_CPU_PATH
@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (AdamP, ADAMP_OPTIONS),
        (AdamP, {**ADAMP_OPTIONS, "capturable": True}),
        (AdamP, {"lr": 1e-3}),
        (SGDP, SGDP_OPTIONS),
        (SGDP, {"lr": 0.1, "momentum": 0.5, "dampening": 0.5, "weight_decay": 1e-4}),
    ],
    ids=["AdamP", "AdamP-capturable", "AdamP-plain", "SGDP", "SGDP-dampening"],
)
def test_step_runs_on_meta_tensors(cls, options, foreach):
    """Meta tensors have no values: ``.item()``, ``bool()`` or ``if t:`` on one raises. A
    step that completes on them does not read device values (no host-device sync)."""
    params = _meta_params()
    for p in params.values():
        with pytest.raises((RuntimeError, NotImplementedError)):
            p.sum().item()  # the property the test relies on
    opt = cls(params.values(), foreach=foreach, **options)
    for _ in range(2):
        for p in params.values():
            p.grad = torch.empty_like(p)
        opt.step()
    for name, p in params.items():
        state = opt.state[p]
        assert p.device.type == "meta"
        assert state["projection"].device.type == "meta"
        assert state["projection"].dtype == torch.uint8
        for key in cls.MOMENT_KEYS:
            assert state[key].device.type == "meta", (name, key)
            assert state[key].shape == p.shape
        if cls is AdamP:
            expected = "meta" if options.get("capturable") else "cpu"
            assert state["step"].device.type == expected
    fraction = opt.scale_invariant_fraction()
    assert fraction.device.type == "meta"
    assert fraction.shape == ()


def _tiny_params():
    gen = torch.Generator().manual_seed(3)
    shapes = {"conv": (4, 3, 3, 3), "linear": (3, 4), "bias": (3,)}
    return {n: torch.randn(s, generator=gen).requires_grad_() for n, s in shapes.items()}


@pytest.mark.parametrize(
    ("cls", "options"),
    [(AdamP, ADAMP_OPTIONS), (SGDP, SGDP_OPTIONS)],
    ids=["AdamP", "SGDP"],
)
def test_compiled_step_matches_eager(cls, options):
    """``torch.compile(opt.step)`` (inductor, the default backend) gives eager's numbers."""
    torch._dynamo.reset()
    eager_params = _tiny_params()
    compiled_params = clone_params(eager_params)
    eager = cls(eager_params.values(), foreach=True, **options)
    compiled = cls(compiled_params.values(), foreach=True, **options)
    compiled_step = torch.compile(compiled.step)
    gen = torch.Generator().manual_seed(4)
    kinds = ["channel", "layer", "none"]
    seen = set()
    try:
        for step in range(3):
            set_grads(eager_params, [compiled_params], step, gen, lambda s, i: kinds[(s + i) % 3])
            eager.step()
            compiled_step()
            assert_all_close(compiled_params, eager_params, 1e-5, f"step {step}")
            codes = codes_of(compiled, compiled_params)
            assert codes == codes_of(eager, eager_params)
            seen.update(codes[n] for n in ("conv", "linear"))
    finally:
        torch._dynamo.reset()
    assert seen == {NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW}


SCHEDULES = {
    "AdamP-OneCycleLR": (
        "AdamP",
        {"lr": 1e-2, "weight_decay": 0.1},
        # Cycles lr and, through ``betas``, beta1 as well.
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-2, total_steps=12),
    ),
    "SGDP-StepLR": (
        "SGDP",
        SGDP_OPTIONS,
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1),
    ),
    "SGDP-OneCycleLR": (
        "SGDP",
        SGDP_OPTIONS,
        # Cycles lr and momentum.
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=12),
    ),
}


@EVERY_CPU_PATH
@pytest.mark.parametrize("case", list(SCHEDULES))
def test_lr_schedulers_drive_the_steps(reference, case, foreach):
    """A scheduler rewrites the groups' hyperparameters between steps; the steps must use
    them: the reference's numbers under the same schedule, not those of a constant lr."""
    name, options, make_schedule = SCHEDULES[case]
    ours_params = make_params(torch.float64)
    ref_params = clone_params(ours_params)
    constant_params = clone_params(ours_params)
    cls = AdamP if name == "AdamP" else SGDP
    ours = cls(ours_params.values(), foreach=foreach, **options)
    ref = getattr(reference, name)(ref_params.values(), **options)
    constant = cls(constant_params.values(), foreach=foreach, **options)
    schedules = [make_schedule(ours), make_schedule(ref)]
    used = set()
    gen = torch.Generator().manual_seed(0)
    for step in range(12):
        set_grads(ours_params, [ref_params, constant_params], step, gen)
        group = ours.param_groups[0]
        used.add((group["lr"], group["betas"][0] if name == "AdamP" else group["momentum"]))
        for opt in (ours, ref, constant):
            opt.step()
        for schedule in schedules:
            schedule.step()
    assert len(used) >= 3
    assert_all_close(ours_params, ref_params, 1e-10, "scheduled")
    assert max((ours_params[n] - constant_params[n]).abs().max().item() for n in NAMES) > 1e-3


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), CASES[:2], ids=CASE_IDS[:2])
def test_grad_scaler_skips_inf_steps_and_otherwise_matches(cls, options, foreach):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    plain_model = copy.deepcopy(model)
    scaled = cls(model.parameters(), foreach=foreach, **options)
    plain = cls(plain_model.parameters(), foreach=foreach, **options)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(4, 3, 6, 6, generator=gen)
        inf_step = step == 3
        scaled.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        if inf_step:
            next(model.parameters()).grad[0].view(-1)[0] = float("inf")
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            state_before = {k: v.clone() for k, v in scaled.state[next(model.parameters())].items()}
            scale_before = scaler.get_scale()
        scaler.step(scaled)
        scaler.update()
        if inf_step:
            for name, p in model.named_parameters():
                assert torch.equal(p, before[name]), f"{name} changed on a skipped step"
            for key, value in scaled.state[next(model.parameters())].items():
                assert torch.equal(value, state_before[key]), key
            assert scaler.get_scale() < scale_before
            continue
        plain.zero_grad()
        plain_model(x).square().mean().backward()
        plain.step()
        for (name, p), q in zip(model.named_parameters(), plain_model.parameters(), strict=True):
            # Scaling by a power of two is exact: so is the match.
            assert torch.equal(p, q), f"step {step} {name}"


def _lockstep_low_precision(cls, options, dtype, foreach, scale):
    """Half-precision parameters, and float32 mirrors reset to their values before each
    step: the half-precision result must be the float32 result rounded, exactly."""
    base = make_params(torch.float32, seed=5)
    low = {n: p.detach().to(dtype).requires_grad_() for n, p in base.items()}
    mirror = {n: p.detach().float().requires_grad_() for n, p in low.items()}
    opt_low = cls(low.values(), foreach=foreach, **options)
    opt_mirror = cls(mirror.values(), foreach=foreach, **options)
    gen = torch.Generator().manual_seed(6)
    for step in range(8):
        set_grads(low, [], step, gen, scale=scale)
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
            state, state_mirror = opt_low.state[p], opt_mirror.state[mirror[name]]
            for key in cls.MOMENT_KEYS:
                assert state[key].dtype == torch.float32, key
                assert torch.equal(state[key], state_mirror[key]), f"step {step} {name} {key}"
            assert state["projection"].dtype == torch.uint8
    assert codes_of(opt_low, low) == codes_of(opt_mirror, mirror)
    return low


@EVERY_CPU_PATH
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("cls", "options"), CASES[:2], ids=CASE_IDS[:2])
def test_half_precision_is_float32_math_rounded(cls, options, dtype, foreach):
    _lockstep_low_precision(cls, options, dtype, foreach, scale=1.0)


@EVERY_CPU_PATH
def test_fp16_tiny_gradients_stay_finite(reference, foreach):
    """Gradients ~1e-4 square to ~1e-8, below fp16's smallest number, and eps=1e-8 rounds to
    0 in fp16: math done in fp16 divides by zero. Ours does it in float32."""
    low = _lockstep_low_precision(AdamP, {"lr": 1e-3}, torch.float16, foreach, scale=1e-4)
    moved = [
        n for n, p in low.items() if not torch.equal(p, make_params(torch.float32, 5)[n].half())
    ]
    assert moved  # the steps did something

    ref_params = {
        n: p.detach().half().requires_grad_() for n, p in make_params(torch.float32, 5).items()
    }
    ref = reference.AdamP(ref_params.values(), lr=1e-3)
    set_grads(ref_params, [], 0, torch.Generator().manual_seed(6), scale=1e-4)
    ref.step()
    assert not all(torch.isfinite(p).all() for p in ref_params.values())  # fp16 math breaks


@EVERY_CPU_PATH
@pytest.mark.parametrize(("cls", "options"), CASES[:2], ids=CASE_IDS[:2])
def test_empty_and_scalar_parameters_step_with_the_others(cls, options, foreach):
    """Zero-size weights (a layer with no output channels, or no inputs) and 0-dim
    parameters step without error, and the others get the plain path's numbers."""
    shapes = {"no_rows": (0, 3), "no_cols": (3, 0), "empty": (0,), "scalar": (), "w": (4, 3)}
    gen = torch.Generator().manual_seed(0)
    start = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    ours = {n: v.clone().requires_grad_() for n, v in start.items()}
    plain = {n: v.clone().requires_grad_() for n, v in start.items()}
    opts = [cls(ours.values(), foreach=foreach, **options)]
    opts.append(cls(plain.values(), foreach=False, **options))
    for _ in range(3):
        for name, shape in shapes.items():
            g = torch.randn(shape, generator=gen)
            ours[name].grad, plain[name].grad = g.clone(), g
        for opt in opts:
            opt.step()
    for name in ("scalar", "w"):
        assert not torch.equal(ours[name], start[name]), name
        assert torch.allclose(ours[name], plain[name], rtol=1e-6, atol=1e-7), name
    for name in ("no_rows", "no_cols", "empty"):
        state = opts[0].state[ours[name]]
        assert state[cls.MOMENT_KEYS[0]].shape == shapes[name], name
        if cls is AdamP:
            assert float(state["step"]) == 3.0, name
