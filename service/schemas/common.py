"""Shapes every part of the API shares: the named values, the limits, pages and errors."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

OptimizerName = Literal["adamp", "sgdp", "adamw", "sgd"]
SamplerName = Literal["tpe", "random", "cmaes", "gp", "qmc", "grid"]
PrunerName = Literal["median", "hyperband", "none"]
Direction = Literal["maximize", "minimize"]
StudyStatusName = Literal["queued", "running", "completed", "failed", "cancelled"]
TrialStateName = Literal["complete", "running", "waiting", "pruned", "fail"]

SEED_MAX = 2**31 - 1
ID_MAX = 2**31 - 1
"""The largest id or trial number (a 32-bit column on PostgreSQL); larger ones are a 422."""
OFFSET_MAX = 2**31 - 1

T = TypeVar("T")


def _field_error(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A validation error pinned to ``loc`` inside the model being validated."""
    return ValidationError.from_exception_data(
        "StudyCreate",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)],
    )


class Page(BaseModel, Generic[T]):
    """A page of a list: ``items`` and the ``total`` that match the filters."""

    items: list[T]
    total: int


class ErrorOut(BaseModel):
    detail: Any
    message: str
