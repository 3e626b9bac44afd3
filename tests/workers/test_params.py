"""Checks of single values against their specs: the source of every field-level 422."""

from __future__ import annotations

import math

import pytest

from workers.params import ParamSpec, check_values, with_defaults

LR = ParamSpec("float", 1e-3, low=0.0, high=10.0, low_open=True)
EPOCHS = ParamSpec("int", 8, low=1, high=200)
FLAG = ParamSpec("bool", False)
MODE = ParamSpec("str", "cosine", choices=("cosine", "constant"))


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (LR, 0.5, 0.5),
        (LR, 10, 10.0),
        (EPOCHS, 3, 3),
        (EPOCHS, 3.0, 3),
        (FLAG, True, True),
        (MODE, "constant", "constant"),
    ],
)
def test_good_values_are_returned_typed(spec: ParamSpec, value: object, expected: object) -> None:
    checked = spec.check(value)
    assert checked == expected
    assert type(checked) is type(expected)


@pytest.mark.parametrize(
    ("spec", "value", "words"),
    [
        (LR, 0.0, "(0, 10]"),
        (LR, -1, "(0, 10]"),
        (LR, 10.5, "(0, 10]"),
        (LR, math.inf, "finite"),
        (LR, math.nan, "finite"),
        (LR, "0.1", "number"),
        (LR, True, "number"),
        (EPOCHS, 2.5, "integer"),
        (EPOCHS, 0, "[1, 200]"),
        (FLAG, 1, "true or false"),
        (MODE, "linear", "'cosine', 'constant'"),
        (MODE, 3, "string"),
    ],
)
def test_bad_values_say_what_is_allowed(spec: ParamSpec, value: object, words: str) -> None:
    with pytest.raises(ValueError, match="must") as err:
        spec.check(value)
    assert words in str(err.value)


def test_check_values_names_the_entry() -> None:
    specs = {"lr": LR, "epochs": EPOCHS}
    assert check_values(specs, {"lr": 1, "epochs": 2.0}) == {"lr": 1.0, "epochs": 2}
    with pytest.raises(ValueError, match=r"^epochs: "):
        check_values(specs, {"epochs": -1})
    with pytest.raises(KeyError, match="momentum"):
        check_values(specs, {"momentum": 0.9})


def test_defaults_fill_what_is_left_out() -> None:
    assert with_defaults({"lr": LR, "epochs": EPOCHS}, {"epochs": 3}) == {"lr": 1e-3, "epochs": 3}
