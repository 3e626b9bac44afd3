"""The stored study spec: written once at submission, read without the plug-ins, and
specs stored before versions still readable."""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from service.optuna_glue import distributions_of
from service.schemas import StudyCreate
from service.study_spec import StudySpec

BODY: dict[str, Any] = {
    "name": "spec",
    "workload": "synthetic",
    "optimizer": "adamp",
    "search_space": {
        "lr": {"low": 1e-3, "high": 0.1, "log": True},
        "steps": {"low": 1, "high": 4},
        "nesterov": {"choices": [True, False]},
    },
    "fixed": {"sleep_s": 0.0},
    "n_trials": 8,
    "sampler": "random",
    "pruner": "none",
}


def test_a_spec_carries_what_the_registry_said_at_submission() -> None:
    spec = StudySpec.from_request(StudyCreate(**BODY))
    stored = spec.stored()
    assert stored["version"] == 1
    assert spec.kinds == {"lr": "float", "steps": "int", "nesterov": "bool"}
    assert "lr" in spec.knob_names
    assert "steps" in spec.workload_args
    dists = distributions_of(StudySpec.from_stored(stored))
    assert isinstance(dists["lr"], FloatDistribution)
    assert isinstance(dists["steps"], IntDistribution)
    assert isinstance(dists["nesterov"], CategoricalDistribution)
    knobs, args = spec.split_params({"lr": 0.01, "steps": 3, "nesterov": True})
    assert knobs["lr"] == 0.01
    assert knobs["nesterov"] is True
    assert args["steps"] == 3
    assert args["sleep_s"] == 0.0


def test_a_spec_stored_before_versions_still_loads() -> None:
    """What the service stored before this change: the plain ``StudyCreate`` dump."""
    old = StudyCreate(**BODY).model_dump(mode="json")
    assert "version" not in old
    spec = StudySpec.from_stored(old)
    assert spec == StudySpec.from_request(StudyCreate(**BODY))


def test_an_old_spec_of_an_uninstalled_workload_loads_from_its_own_ranges() -> None:
    old = {**StudyCreate(**BODY).model_dump(mode="json"), "workload": "gone-plugin"}
    spec = StudySpec.from_stored(old)
    assert spec.workload == "gone-plugin"
    assert spec.kinds["steps"] == "int", "whole-number bounds"
    assert spec.kinds["lr"] == "float", "an optimizer knob: still known"
    _, args = spec.split_params({"lr": 0.01, "steps": 2, "nesterov": False})
    assert args["steps"] == 2


def test_a_stored_spec_is_read_without_the_registry() -> None:
    stored = {**StudySpec.from_request(StudyCreate(**BODY)).stored(), "workload": "gone"}
    spec = StudySpec.from_stored(stored)
    assert spec.kinds["steps"] == "int"
    assert isinstance(distributions_of(spec)["steps"], IntDistribution)


def test_a_newer_field_is_ignored_by_this_reader() -> None:
    stored = {**StudySpec.from_request(StudyCreate(**BODY)).stored(), "a_later_field": 1}
    assert StudySpec.from_stored(stored).workload == "synthetic"
