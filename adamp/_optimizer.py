"""What AdamP and SGDP share: argument checks, state layout, mixed precision, diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from adamp import _fused
from adamp._cpu import cpu_kernels_available
from adamp._projection import project_many_

LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Parameter dtypes whose update math runs in float32 (state kept in float32 too)."""


def check_non_negative(name: str, value: float) -> None:
    """Reject ``value < 0`` (and NaN) with a message that names the argument."""
    if not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a number >= 0)")


def check_unit_interval(name: str, value: float, *, closed_high: bool) -> None:
    """Reject values outside ``[0, 1]`` (or ``[0, 1)`` when ``closed_high`` is false)."""
    ok = isinstance(value, (int, float)) and (
        0.0 <= value <= 1.0 if closed_high else 0.0 <= value < 1.0
    )
    if not ok:
        interval = "[0, 1]" if closed_high else "[0, 1)"
        raise ValueError(f"Invalid {name}: {value!r} (must be in {interval})")


def compute_dtype(param: Tensor) -> torch.dtype:
    """The dtype the update math and the optimizer state use for ``param``."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def group_by_device_and_dtype(params: Sequence[Tensor]) -> dict[tuple[Any, ...], list[int]]:
    """Indices of ``params`` grouped by (device, dtype): one multi-tensor launch per group."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    return groups


def default_foreach(params: Sequence[Tensor]) -> bool:
    """Multi-tensor by default where torch's own optimizers default to it (all on CUDA)."""
    return bool(params) and all(
        p.device.type in ("cuda", "xpu", "mps") and torch.is_floating_point(p) for p in params
    )


class ProjectingOptimizer(Optimizer):
    """Base of AdamP and SGDP: the parts of the ``torch.optim`` contract they share.

    State per parameter: the moment buffers named in ``MOMENT_KEYS`` (float32 for fp16/bf16
    parameters), and ``projection``, a ``uint8`` 0-dim device tensor saying how the last
    step treated the weight (0 none, 1 channel view, 2 layer view).
    """

    MOMENT_KEYS: tuple[str, ...] = ()
    CPU_STEP: Callable[..., bool]
    """The subclass's step on torch's fused CPU kernels: ``(param, grad, state, scratch,
    **options) -> taken``."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if defaults.get("fused") and defaults.get("foreach"):
            raise ValueError("fused=True and foreach=True are exclusive: choose one path")
        super().__init__(params, defaults)
        if defaults.get("fused"):
            everything = [p for g in self.param_groups for p in g["params"]]
            reason = _fused.unsupported_reason(everything)
            if reason is not None:
                raise RuntimeError(
                    f"fused=True cannot be used here: {reason}. "
                    "Leave fused unset to pick the fastest available path."
                )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill in what state dicts of the reference release lack (and convert int steps)."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("capturable", False)
            for p in group["params"]:
                st = self.state.get(p, {})
                step = st.get("step")
                if step is not None and not torch.is_tensor(step):
                    device = p.device if group["capturable"] else "cpu"
                    st["step"] = torch.tensor(float(step), dtype=torch.float32, device=device)

    @staticmethod
    def _process_value_according_to_param_policy(
        param: Tensor,
        value: Tensor,
        param_id: int,
        param_groups: list[dict[Any, Any]],
        key: Any = None,
    ) -> Tensor:
        """Place loaded state like fresh state: moments in the compute dtype, codes as uint8."""
        if key == "step":
            capturable = any(
                g.get("capturable", False) for g in param_groups if param_id in g["params"]
            )
            device = param.device if capturable else "cpu"
            return value.to(dtype=torch.float32, device=device)
        if key == "projection":
            return value.to(dtype=torch.uint8, device=param.device)
        if value.is_floating_point():
            return value.to(dtype=compute_dtype(param), device=param.device)
        return value.to(device=param.device)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.load_state_dict``, with the loaded state placed like fresh
        state (see ``_process_value_according_to_param_policy``).

        torch's loader calls ``Optimizer._process_value_according_to_param_policy`` by the
        base class's name, so the override above is never used by it: it casts every
        floating-point state tensor to the parameter's dtype (fp16/bf16 moments, rounded)
        and the ``uint8`` projection codes to floats. The saved tensors are placed again
        here, from the state dict as given, by this class's policy.
        """
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        id_map = dict(
            zip(
                (i for g in saved_groups for i in g["params"]),
                (p for g in self.param_groups for p in g["params"]),
                strict=True,
            )
        )
        for param_id, saved in state_dict["state"].items():
            param = id_map.get(param_id)
            if param is None:
                continue
            state = self.state[param]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    state[key] = self._process_value_according_to_param_policy(
                        param, value, param_id, saved_groups, key
                    )

    def _step_tensor(self, param: Tensor, group: dict[str, Any]) -> Tensor:
        """A zero step count: on the parameter's device when capturable or when the fused
        kernels will step it (as torch's fused optimizers keep it), else on the CPU."""
        on_device = group["capturable"] or self._use_fused(group, [param])
        device = param.device if on_device else torch.device("cpu")
        return torch.zeros((), dtype=torch.float32, device=device)

    def _collect(
        self, group: dict[str, Any]
    ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        """Parameters with a gradient, their gradients and their (initialised) state."""
        params: list[Tensor] = []
        grads: list[Tensor] = []
        states: list[dict[str, Any]] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "use torch.optim.SparseAdam or dense gradients"
                )
            state = self.state[p]
            if not state:
                self._init_state(p, group, state)
            if "projection" not in state:
                state["projection"] = torch.zeros((), dtype=torch.uint8, device=p.device)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
        return params, grads, states

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = self._collect(group)
            if not params:
                continue
            options = self._options(group)
            if self._use_fused(group, params):
                group_step = self._fused_or_foreach_step
            elif self._use_foreach(group, params):
                group_step = self._multi_tensor_step
            else:
                cpu_kernels = self._use_cpu_kernels(group)
                for param, grad, state in zip(params, grads, states, strict=True):
                    if not (cpu_kernels and self._cpu_kernel_step(param, grad, state, **options)):
                        self._single_tensor_step(param, grad, state, **options)
                continue
            for indices in group_by_device_and_dtype(params).values():
                group_step(
                    [params[i] for i in indices],
                    [grads[i] for i in indices],
                    [states[i] for i in indices],
                    **options,
                )
        return loss

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the step functions, read from a param group."""
        raise NotImplementedError

    def _single_tensor_step(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], **options: Any
    ) -> None:
        raise NotImplementedError

    def _cpu_kernel_step(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], **options: Any
    ) -> bool:
        """Step ``param`` with torch's fused CPU kernels (``CPU_STEP``, from ``adamp._cpu``);
        ``False``, having changed nothing, where they cannot take it."""
        scratch = self._scratch_like(param)
        return scratch is not None and type(self).CPU_STEP(param, grad, state, scratch, **options)

    def _multi_tensor_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> None:
        raise NotImplementedError

    def _fused_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> bool:
        raise NotImplementedError

    def _fused_or_foreach_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        **options: Any,
    ) -> None:
        """The fused kernels where they can address every tensor, else the foreach path
        (gradients or state in another layout than their parameter, say)."""
        if not self._fused_step(params, grads, states, **options):
            self._multi_tensor_step(params, grads, states, **options)

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _scratch_like(self, param: Tensor) -> Tensor | None:
        """Reusable memory of ``param``'s size and compute dtype for a per-tensor step on
        the CPU (one buffer per optimizer, dtype and device, grown to the largest
        parameter); ``None`` elsewhere, where allocators cache freed memory themselves."""
        if param.device.type != "cpu":
            return None
        dtype = compute_dtype(param)
        key = (param.device, dtype)
        buffers: dict[tuple[Any, ...], Tensor] = self.__dict__.setdefault("_scratch", {})
        buffer = buffers.get(key)
        if buffer is None or buffer.numel() < param.numel():
            buffer = buffers[key] = torch.empty(param.numel(), dtype=dtype, device=param.device)
        return buffer[: param.numel()].view(param.shape)

    def _zeros_like(self, param: Tensor) -> Tensor:
        return torch.zeros_like(
            param, dtype=compute_dtype(param), memory_format=torch.preserve_format
        )

    def _use_fused(self, group: dict[str, Any], params: Sequence[Tensor]) -> bool:
        """Fused when asked, or by default on CUDA where Triton is installed; never while
        ``torch.compile`` traces the step (inductor fuses the foreach path itself)."""
        fused = group.get("fused")
        if fused is False or torch.compiler.is_compiling():
            return False
        if fused:
            reason = _fused.unsupported_reason(params)
            if reason is not None:
                raise RuntimeError(f"fused=True cannot step these parameters: {reason}")
            return True
        if group["foreach"] is not None:
            return False
        return all(p.device.type == "cuda" for p in params) and (
            _fused.unsupported_reason(params) is None
        )

    def _use_cpu_kernels(self, group: dict[str, Any]) -> bool:
        """The per-tensor loop tries torch's fused CPU kernels first unless a path was chosen:
        ``foreach=False`` (or ``fused=False``) keeps the plain per-tensor path, the readable
        reference; ``torch.compile`` traces the plain path too."""
        return (
            group["foreach"] is None
            and group.get("fused") is None
            and not torch.compiler.is_compiling()
            and cpu_kernels_available()
        )

    def _use_foreach(self, group: dict[str, Any], params: Sequence[Tensor]) -> bool:
        foreach = group["foreach"]
        return default_foreach(params) if foreach is None else bool(foreach)

    def projected_parameters(self) -> Iterable[tuple[Tensor, Tensor]]:
        """``(parameter, projection code)`` for every weight the optimizer may project."""
        for group in self.param_groups:
            for p in group["params"]:
                code = self.state.get(p, {}).get("projection")
                if p.dim() > 1 and code is not None:
                    yield p, code

    def scale_invariant_fraction(self) -> Tensor:
        """Fraction, by elements, of the multi-dimensional weights projected at the last step.

        A 0-dim float32 tensor on the first parameter's device, computed without a host
        sync: call ``.item()`` only when the number is needed (once an epoch, say). Zero
        before the first step.
        """
        pairs = list(self.projected_parameters())
        first = next(p for g in self.param_groups for p in g["params"])
        if not pairs:
            return torch.zeros((), dtype=torch.float32, device=first.device)
        # Projected elements over all elements, both summed by the same kernel over the same
        # sizes: exactly 1 when every weight was projected, and never above 1 (a float32 sum
        # of per-weight shares can come out as 0.99999994 or 1.0000001).
        device = first.device
        sizes = torch.stack(
            [torch.full((), float(p.numel()), dtype=torch.float32, device=device) for p, _ in pairs]
        )
        projected = torch.stack([code.to(device) > 0 for _, code in pairs])
        return (sizes * projected).sum() / sizes.sum()


def to_compute(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Float32 copies of fp16/bf16 tensors; other tensors as they are."""
    return [t.float() if t.dtype in LOW_PRECISION else t for t in tensors]


def write_back(params: Sequence[Tensor], computed: Sequence[Tensor]) -> None:
    """Copy float32 results back into fp16/bf16 parameters (rounding once, at the end)."""
    for p, c in zip(params, computed, strict=True):
        if p is not c:
            p.copy_(c)


def decay_factors(codes: Tensor, decay: tuple[float, float], dtype: torch.dtype) -> Tensor:
    """Per weight, ``decay[1]`` where the weight was projected (code > 0), else ``decay[0]``."""
    plain = torch.full(codes.shape, decay[0], dtype=dtype, device=codes.device)
    projected = torch.full(codes.shape, decay[1], dtype=dtype, device=codes.device)
    return torch.where(codes > 0, projected, plain)


def project_and_decay_(
    ws: Sequence[Tensor],
    gs: Sequence[Tensor],
    updates: Sequence[Tensor],
    states: Sequence[dict[str, Any]],
    delta: float,
    eps: float,
    decay: tuple[float, float] | None,
) -> None:
    """Project the updates of the multi-dimensional weights, record their codes in the
    state, and multiply every weight by its decay factor ``(plain, projected)``.
    """
    multi = [i for i, w in enumerate(ws) if w.dim() > 1]
    flat = [i for i, w in enumerate(ws) if w.dim() <= 1]
    if multi:
        multi_ws = [ws[i] for i in multi]
        codes = project_many_(
            multi_ws, [gs[i] for i in multi], [updates[i] for i in multi], delta, eps
        )
        torch._foreach_copy_([states[i]["projection"] for i in multi], list(codes.unbind()))
        if decay is not None:
            factors = decay_factors(codes, decay, multi_ws[0].dtype)
            torch._foreach_mul_(multi_ws, list(factors.unbind()))
    if flat and decay is not None:
        torch._foreach_mul_([ws[i] for i in flat], decay[0])


def apply_updates_(
    ws: Sequence[Tensor], updates: Sequence[Tensor], step_sizes: Sequence[float] | Sequence[Tensor]
) -> None:
    """``w <- w - step_size * update`` for each weight, in as few kernels as the sizes allow."""
    first = step_sizes[0]
    if isinstance(first, float) and all(s == first for s in step_sizes):
        torch._foreach_add_(list(ws), list(updates), alpha=-first)
        return
    sizes: list[Any] = list(step_sizes)  # per-tensor floats, or 0-dim device tensors
    torch._foreach_mul_(list(updates), sizes)
    torch._foreach_sub_(list(ws), list(updates))
