"""The recorder alone: queued writes land in order, batched, and a refused one is skipped
alone; an abandoned recorder writes nothing more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from service.scheduler.recorder import Recorder
from tests.support.optuna_files import optuna_storage_at


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[optuna.storages.BaseStorage]:
    with optuna_storage_at(tmp_path / "recorder.db") as storage:
        yield storage


def test_writes_land_in_order_and_a_refused_one_alone_is_skipped(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="rec")
    done, running = study.ask(), study.ask()
    study.tell(done, 1.0)
    recorder = Recorder(storage)
    recorder.start()
    recorder.user_attrs(running._trial_id, {"placement": {"node": "a"}})
    recorder.user_attrs(done._trial_id, {"late": True})  # refused: the trial has finished
    recorder.report(running._trial_id, 0, 0.5)
    recorder.user_attrs(running._trial_id, {"duration_s": 2.0})
    recorder.call(lambda: study.tell(running, 0.25))
    recorder.user_attrs(running._trial_id, {"after_tell": True})  # refused: told before it
    assert recorder.flush(timeout=30)
    trial = storage.get_trial(running._trial_id)
    assert trial.state == TrialState.COMPLETE
    assert trial.value == 0.25
    assert trial.user_attrs == {"placement": {"node": "a"}, "duration_s": 2.0}
    assert trial.intermediate_values == {0: 0.5}
    assert "late" not in storage.get_trial(done._trial_id).user_attrs
    assert recorder.backlog == 0


def test_an_abandoned_recorder_writes_nothing_more(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="gone")
    trial = study.ask()
    recorder = Recorder(storage)  # not started: nothing is written until flushed
    recorder.user_attrs(trial._trial_id, {"x": 1})
    assert recorder.abandon() == 1
    assert recorder.flush(timeout=5)
    assert storage.get_trial(trial._trial_id).user_attrs == {}
