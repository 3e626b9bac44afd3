"""The recorder alone: queued writes land in order, batched, a refused one skipped alone,
and a pruning check sees the report it follows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from db.engine import create_db_engine
from db.migrate import upgrade
from service.optuna_glue import storage_for
from service.scheduler.recorder import Recorder


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[optuna.storages.BaseStorage]:
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    rdb = storage_for(url)
    yield optuna.storages.get_storage(rdb)
    rdb.engine.dispose()
    engine.dispose()


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


def test_a_pruning_check_runs_after_its_report_is_written(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="prune")
    trial = study.ask()
    seen: list[dict[int, float]] = []

    def check() -> bool:
        values = storage.get_trial(trial._trial_id).intermediate_values
        seen.append(dict(values))
        return len(values) >= 2

    recorder = Recorder(storage)
    recorder.start()
    for step in range(3):
        recorder.report(trial._trial_id, step, float(step), check)
    assert recorder.flush(timeout=30)
    assert seen == [{0: 0.0}, {0: 0.0, 1: 1.0}, {0: 0.0, 1: 1.0, 2: 2.0}]
    assert recorder.decisions() == [(trial._trial_id, 1), (trial._trial_id, 2)]


def test_an_abandoned_recorder_writes_nothing_more(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="gone")
    trial = study.ask()
    recorder = Recorder(storage)  # not started: nothing is written until flushed
    recorder.user_attrs(trial._trial_id, {"x": 1})
    assert recorder.abandon() == 1
    assert recorder.flush(timeout=5)
    assert storage.get_trial(trial._trial_id).user_attrs == {}
