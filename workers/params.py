"""Typed descriptions of tunable values (optimizer knobs and workload arguments) and their checks.

The service validates every request against these specs before anything is queued, so a
worker never receives a value its optimizer or workload would reject.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ParamKind = Literal["float", "int", "bool", "str"]

MAX_EXACT_INT = 2**53
"""Integers beyond this lose precision as JSON numbers and floats; none is accepted."""

_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = 40


def show(value: Any) -> str:
    """A short ``repr`` of a client's value for an error message: never the whole of it."""
    return _short.repr(value)


@dataclass(frozen=True)
class ParamSpec:
    """One tunable value: its type, default and allowed range.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` make a bound exclusive);
    ``choices`` restricts a value to a set. ``tunable`` says whether it may appear in a
    search space (a boolean knob such as ``nesterov`` may, as ``{choices: [true, false]}``).
    """

    kind: ParamKind
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    tunable: bool = True

    def describe_range(self) -> str:
        """Human-readable allowed range, used in error messages and the API."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("bool", "str"):
            return f"a {self.kind}"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an integer' if self.kind == 'int' else 'a number'} in {lo}{low}, {high}{hi}"

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to this spec's type, or raise ``ValueError`` saying why.

        Messages quote the value shortened (``show``), so a huge input never comes back whole.
        """
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {show(value)}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"must be a string, got {show(value)}")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"must be {self.describe_range()}, got {show(value)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {self.describe_range()}, got {show(value)}")
        if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
            raise ValueError(
                f"must be {self.describe_range()}, got a {value.bit_length()}-bit integer"
            )
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"must be an integer, got {show(value)}")
            value = int(value)
            if abs(value) > MAX_EXACT_INT:
                raise ValueError(f"must be {self.describe_range()}, got {show(value)}")
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number, got {show(value)}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be {self.describe_range()}, got {show(value)}")
        if not self.in_range(value):
            raise ValueError(f"must be {self.describe_range()}, got {show(value)}")
        return value

    def in_range(self, value: float) -> bool:
        """Whether a number lies inside ``[low, high]`` with the open ends honoured."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )


def check_values(specs: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every entry of ``values`` against ``specs``; unknown names are an error.

    Raises ``KeyError`` for an unknown name and ``ValueError`` (whose message starts with
    the name) for a bad value, so callers can report the offending field.
    """
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name not in specs:
            raise KeyError(name)
        try:
            checked[name] = specs[name].check(value)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from err
    return checked


def with_defaults(specs: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` completed with the defaults of every spec it leaves out."""
    return {name: values.get(name, spec.default) for name, spec in specs.items()}
