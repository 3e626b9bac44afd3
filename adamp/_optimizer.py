"""What AdamP and SGDP share: argument checks, their state as tensor lists, diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from adamp import functional
from adamp._common import Scratch, compute_dtype


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


class GroupTensors(NamedTuple):
    """The tensor lists of one parameter group's step: the parameters that have a gradient,
    in order, with their gradients and state (entry ``i`` of each list for parameter ``i``).
    (A named tuple: ``torch.compile`` traces through its construction.)"""

    params: list[Tensor]
    grads: list[Tensor]
    buffers: dict[str, list[Tensor]]
    """The per-parameter buffers named in ``MOMENT_KEYS``, by key."""
    state_steps: list[Tensor]
    projections: list[Tensor]


class ProjectingOptimizer(Optimizer):
    """Base of AdamP and SGDP: the state and bookkeeping they share; the math is in
    ``adamp.functional``, which each subclass's ``_update`` calls with its hyperparameters.

    State per parameter: the buffers named in ``MOMENT_KEYS`` (float32 for fp16/bf16
    parameters), ``step`` where ``COUNTS_STEPS`` (a 0-dim float32 tensor: on the CPU, or on
    the parameter's device when capturable or stepped by the fused kernels, as in
    ``torch.optim``), and ``projection``, a ``uint8`` 0-dim device tensor saying how the
    last step treated the weight (0 none, 1 channel view, 2 layer view).
    """

    MOMENT_KEYS: tuple[str, ...] = ()
    COUNTS_STEPS: bool = False

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        if defaults.get("fused") or defaults.get("foreach"):
            # The checks of every step, made once here so that a bad choice fails early.
            everything = [p for g in self.param_groups for p in g["params"]]
            functional._default_to_fused_or_foreach(
                everything, defaults.get("fused"), defaults.get("foreach")
            )

    def _update(self, group: dict[str, Any], tensors: GroupTensors, scratch: Scratch) -> None:
        """Run ``adamp.functional``'s step of this optimizer on one group's tensors."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Memory the per-tensor CPU paths reuse between steps (see _common.scratch_like).
        scratch: Scratch = self.__dict__.setdefault("_scratch", {})
        for group in self.param_groups:
            tensors = self._group_tensors(group)
            if tensors.params:
                self._update(group, tensors, scratch)
        return loss

    def _group_tensors(self, group: dict[str, Any]) -> GroupTensors:
        """The tensor lists of ``group``'s step, with the state created where it is missing.

        torch's optimizers call this ``_init_group``; ``torch.compile`` treats a method of
        that name specially (it expects torch's return value), hence another name.
        """
        tensors = GroupTensors([], [], {key: [] for key in self.MOMENT_KEYS}, [], [])
        states = []
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
                for key in self.MOMENT_KEYS:
                    state[key] = torch.zeros_like(
                        p, dtype=compute_dtype(p), memory_format=torch.preserve_format
                    )
            if "projection" not in state:  # also absent from the reference's state dicts
                state["projection"] = torch.zeros((), dtype=torch.uint8, device=p.device)
            states.append(state)
            tensors.params.append(p)
            tensors.grads.append(p.grad)
            for key in self.MOMENT_KEYS:
                tensors.buffers[key].append(state[key])
            tensors.projections.append(state["projection"])
        if self.COUNTS_STEPS:
            tensors.state_steps.extend(self._placed_steps(group, tensors.params, states))
        return tensors

    @staticmethod
    def _placed_steps(
        group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]
    ) -> list[Tensor]:
        """The step counts (zero where missing) where the step needs them: on the
        parameter's device when capturable or when the fused kernels step the group (as
        torch's fused optimizers keep them), else on the CPU. A count already on its
        parameter's device stays there: every path reads it without a sync."""
        pairs = zip(params, states, strict=True)
        if all("step" in st and st["step"].device == p.device for p, st in pairs):
            return [st["step"] for st in states]
        fused, _ = functional._default_to_fused_or_foreach(params, group["fused"], group["foreach"])
        on_device = group["capturable"] or fused
        for p, st in zip(params, states, strict=True):
            step = st.get("step")
            if step is None:
                device = p.device if on_device else torch.device("cpu")
                st["step"] = torch.zeros((), dtype=torch.float32, device=device)
            elif on_device and step.device != p.device:  # from a loaded state dict
                st["step"] = step.to(p.device)
        return [st["step"] for st in states]

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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.load_state_dict``, with the loaded state placed like fresh
        state: moments in the compute dtype on the parameter's device, codes as ``uint8``,
        step counts as float32 (moved to the device by ``_group_tensors`` where needed).

        torch's loader casts every floating-point state tensor to the parameter's dtype
        (fp16/bf16 moments, rounded) and the ``uint8`` projection codes to floats, by
        ``Optimizer._process_value_according_to_param_policy``, which it calls by the base
        class's name, so no override reaches it. The saved tensors are placed again here,
        from the state dict as given.
        """
        super().load_state_dict(state_dict)
        saved_ids = (i for g in state_dict["param_groups"] for i in g["params"])
        groups = [(p, g) for g in self.param_groups for p in g["params"]]
        placed = dict(zip(saved_ids, groups, strict=True))
        for param_id, saved in state_dict["state"].items():
            if param_id not in placed:
                continue
            param, group = placed[param_id]
            state = self.state[param]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    state[key] = _placed(param, group, key, value)

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


def _placed(param: Tensor, group: dict[str, Any], key: str, value: Tensor) -> Tensor:
    """A loaded state tensor placed as fresh state would be."""
    if key == "step":
        device = param.device if group.get("capturable") else torch.device("cpu")
        return value.to(dtype=torch.float32, device=device)
    if key == "projection":
        return value.to(dtype=torch.uint8, device=param.device)
    if value.is_floating_point():
        return value.to(dtype=compute_dtype(param), device=param.device)
    return value.to(device=param.device)
