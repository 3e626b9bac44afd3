"""A trial's lineage: its re-runs share its checkpoint and continue its learning curve.

A re-run (crashed worker, lost node, restarted service, preemption) is a new Optuna trial
with the same parameters and ``retry_of`` naming the attempt before it. All attempts of one
configuration carry ``lineage``, the first attempt's number: the key of their checkpoint
and of their seed, so a resumed attempt draws the same data order as the first.

When an attempt resumes from a checkpoint saved after step ``k`` (the worker's ``Resumed``
event), the values of steps ``0..k`` that earlier attempts reported are copied into the new
trial before any of its own reports: the pruner, the API and optuna-dashboard see one
clean curve, each step once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

ATTR_LINEAGE = "lineage"
ATTR_RESUMED_FROM = "resumed_from"
ATTR_RETRY_OF = "retry_of"  # written by the scheduler when it enqueues a re-run


def lineage_of(user_attrs: Mapping[str, Any], number: int) -> int:
    """The first attempt's number of the trial with these attributes and ``number``."""
    value = user_attrs.get(ATTR_LINEAGE)
    return int(value) if value is not None else number


def trial_lineage(
    storage: optuna.storages.BaseStorage, optuna_study_id: int, number: int
) -> int | None:
    """The lineage of trial ``number`` of a study, ``None`` when it has no such trial."""
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(optuna_study_id, number)
        trial = storage.get_trial(trial_id)
    except KeyError:
        return None
    return lineage_of(trial.user_attrs, number)


def earlier_values(
    storage: optuna.storages.BaseStorage, study_id: int, retry_of: int | None
) -> dict[int, float]:
    """Intermediate values of the attempts before a re-run, newest attempt winning a step.

    Walks ``retry_of`` back to the first attempt: an attempt that died before it reported
    anything still leaves the values of the ones before it reachable.
    """
    values: dict[int, float] = {}
    seen: set[int] = set()
    number = retry_of
    while number is not None and number not in seen:
        seen.add(number)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        earlier = storage.get_trial(trial_id)
        for step, value in earlier.intermediate_values.items():
            values.setdefault(step, value)
        previous = earlier.user_attrs.get(ATTR_RETRY_OF)
        number = int(previous) if previous is not None else None
    return values


def carry_over(storage: optuna.storages.BaseStorage, trial: optuna.Trial, step: int) -> int:
    """Copy the earlier attempts' values of steps ``<= step`` into ``trial`` (a re-run that
    resumed from a checkpoint saved after ``step``); returns how many were copied."""
    retry_of = trial.user_attrs.get(ATTR_RETRY_OF)
    values = earlier_values(
        storage, trial.study._study_id, int(retry_of) if retry_of is not None else None
    )
    copied = 0
    for earlier_step in sorted(values):
        if earlier_step <= step:
            storage.set_trial_intermediate_value(
                trial._trial_id, earlier_step, values[earlier_step]
            )
            copied += 1
    storage.set_trial_user_attr(trial._trial_id, ATTR_RESUMED_FROM, step)
    return copied
