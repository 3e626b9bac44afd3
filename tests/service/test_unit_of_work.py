"""Many Optuna storage calls in one transaction: an ask commits once and is all or nothing;
the recorder writes a burst of tells and attributes in one commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import event

from service.scheduler.recorder import Recorder
from service.scheduler.unit_of_work import unit_of_work
from tests.support.optuna_files import optuna_storage_at

KNOBS = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "delta": FloatDistribution(1e-2, 1.0, log=True),
    "wd_ratio": FloatDistribution(0.0, 1.0),
}


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[optuna.storages.BaseStorage]:
    with optuna_storage_at(tmp_path / "unit.db") as storage:
        yield storage


@pytest.fixture
def commits(storage: optuna.storages.BaseStorage) -> Iterator[list[int]]:
    """Counts the commits of Optuna's engine (one entry per commit)."""
    engine = storage._backend.engine  # type: ignore[attr-defined]
    seen: list[int] = []

    def on_commit(_conn: object) -> None:
        seen.append(1)

    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def test_an_ask_in_a_unit_commits_once(storage, commits) -> None:
    study = optuna.create_study(storage=storage, study_name="once")
    commits.clear()
    study.ask(fixed_distributions=KNOBS)
    alone = len(commits)
    commits.clear()
    with unit_of_work(storage):
        trial = study.ask(fixed_distributions=KNOBS)
    assert alone >= 4, "without a unit: the trial, then a commit per sampled value"
    assert len(commits) == 1
    assert set(storage.get_trial(trial._trial_id).params) == set(KNOBS)


def test_a_failing_unit_leaves_nothing_behind(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="atomic")

    def ask_then_fail() -> None:
        with unit_of_work(storage):
            trial = study.ask(fixed_distributions=KNOBS)
            assert storage.get_trial(trial._trial_id).params  # visible inside the unit
            raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        ask_then_fail()
    assert study.trials == [], "no trial with half its parameters is left"
    again = study.ask(fixed_distributions=KNOBS)  # the cache forgot the rolled-back trial
    assert [t.number for t in study.trials] == [again.number]
    assert set(study.trials[0].params) == set(KNOBS)


def test_calls_outside_a_unit_commit_as_before(storage, commits) -> None:
    study = optuna.create_study(storage=storage, study_name="plain")
    trial = study.ask()
    commits.clear()
    storage.set_trial_user_attr(trial._trial_id, "a", 1)
    storage.set_trial_user_attr(trial._trial_id, "b", 2)
    assert len(commits) == 2


def test_the_recorder_writes_a_burst_of_trials_in_one_commit(storage, commits) -> None:
    study = optuna.create_study(storage=storage, study_name="burst")
    trials = [study.ask(fixed_distributions=KNOBS) for _ in range(10)]
    recorder = Recorder(storage)  # not started: flush() writes everything queued at once
    for i, trial in enumerate(trials):
        recorder.user_attrs(trial._trial_id, {"duration_s": float(i)})
        recorder.report(trial._trial_id, 0, float(i))
        recorder.call(lambda t=trial, v=float(i): study.tell(t, v))
    commits.clear()
    assert recorder.flush(timeout=30)
    assert len(commits) == 1
    done = study.trials
    assert [t.state for t in done] == [TrialState.COMPLETE] * 10
    assert [t.value for t in done] == [float(i) for i in range(10)]
    assert [t.user_attrs["duration_s"] for t in done] == [float(i) for i in range(10)]


def test_a_refused_tell_in_a_burst_costs_only_itself(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="refused")
    first, second = study.ask(), study.ask()
    study.tell(first, 1.0)
    recorder = Recorder(storage)
    recorder.user_attrs(second._trial_id, {"placement": "node-a"})
    recorder.call(lambda: study.tell(first, 2.0))  # refused: already told
    recorder.call(lambda: study.tell(second, 3.0))
    assert recorder.flush(timeout=30)
    assert storage.get_trial(first._trial_id).value == 1.0
    told = storage.get_trial(second._trial_id)
    assert (told.state, told.value, told.user_attrs) == (
        TrialState.COMPLETE,
        3.0,
        {"placement": "node-a"},
    )
