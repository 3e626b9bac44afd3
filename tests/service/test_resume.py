"""Re-run trials resume from their checkpoints: the scheduler's side, without a cluster.

Trials run in threads (``ThreadCluster``) on a real SQLite database; a crash is played by
a cluster that ends a trial's stream with ``Crashed`` after its second report, as a dead
worker does. The tests with real Ray workers are in ``test_resume_cluster.py``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import update

from db.models import Study, utcnow
from service import repository
from service.checkpoints.retention import sweep
from service.cluster import Crashed, Ended, Event
from service.cluster.threads import ThreadCluster, _ThreadTrial
from service.scheduler import Scheduler
from service.schemas import StudyCreate
from tests.support.scheduling import Parts, migrated
from workers.checkpoint_format import encode
from workers.checkpoints import CheckpointStore
from workers.messages import Placement, Report, TrialRequest
from workers.runner import run_trial


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    with migrated(f"sqlite:///{tmp_path / 'resume.db'}") as parts:
        yield parts


class CrashingCluster(ThreadCluster):
    """Runs trials in threads; the first submission dies after its report of step 1.
    Records the steps each submission reported, to show none is reported twice."""

    def __init__(self) -> None:
        super().__init__(cpus=4)
        self.reported: list[list[int]] = []

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        index = len(self.reported)
        steps: list[int] = []
        self.reported.append(steps)
        trial = _ThreadTrial(queue.Queue(), threading.Event(), cpus, gpus)
        placement = Placement("local", "127.0.0.1", "h", 1)

        def target() -> None:
            stream = run_trial(request, placement, poll_s=0.02)
            try:
                for event in stream:
                    trial.outcomes.put(Event(event))
                    if isinstance(event, Report):
                        steps.append(event.step)
                        if index == 0 and event.step == 1:
                            trial.outcomes.put(Crashed("WorkerCrashedError: killed"))
                            return
                    if trial.stop.is_set():
                        break
            finally:
                stream.close()  # type: ignore[attr-defined]
            trial.outcomes.put(Ended())

        threading.Thread(target=target, daemon=True).start()
        return trial


def _submit(parts: Parts, name: str, **fields: Any) -> Study:
    sessions, storage = parts
    body: dict[str, Any] = {
        "name": name,
        "workload": "synthetic",
        "optimizer": "adamp",
        "sampler": "random",
        "pruner": "median",
        "seed": 3,
        "n_trials": 1,
        "max_concurrent": 1,
        "fixed": {"steps": 6, "noise": 0.3, "sleep_s": 0.01},
    }
    body.update(fields)
    return repository.create_study(sessions, storage, StudyCreate(**body), owner="tester")


def _run(parts: Parts, study: Study, executor: ThreadCluster, checkpoint_url: str) -> None:
    sessions, storage = parts
    scheduler = Scheduler(sessions, storage, executor, checkpoint_url=checkpoint_url)
    scheduler.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sessions() as session:
                if repository.get_study(session, study.id).status in ("completed", "failed"):
                    return
            time.sleep(0.05)
        raise AssertionError("the study did not end")
    finally:
        scheduler.stop()


def _trials(parts: Parts, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=parts[1]).get_trials()


def test_a_crashed_trial_resumes_with_one_clean_curve(parts: Parts, tmp_path: Path) -> None:
    url = str(tmp_path / "checkpoints")
    whole = _submit(parts, "whole")
    _run(parts, whole, ThreadCluster(cpus=4), url)
    crashing = CrashingCluster()
    split = _submit(parts, "split")
    _run(parts, split, crashing, url)

    (reference,) = _trials(parts, "whole")
    first, rerun = _trials(parts, "split")
    assert first.state == TrialState.FAIL
    assert first.user_attrs["stop_reason"] == "worker died"
    assert rerun.state == TrialState.COMPLETE
    assert rerun.user_attrs["retry_of"] == first.number
    assert rerun.user_attrs["resumed_from"] == 1
    assert crashing.reported == [[0, 1], [2, 3, 4, 5]], "each step reported once"
    assert rerun.intermediate_values == reference.intermediate_values
    assert rerun.value == reference.value


def test_an_unusable_store_fails_the_trial_and_reruns_it(parts: Parts, tmp_path: Path) -> None:
    """A store that refuses writes is the cluster's fault: each attempt fails with the
    store's message and is run again, up to the attempts allowed; nothing stays running."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    study = _submit(parts, "no-store", n_trials=1)
    _run(parts, study, ThreadCluster(cpus=4), str(blocker / "checkpoints"))
    trials = _trials(parts, "no-store")
    assert len(trials) == 3, "run again until max_trial_attempts (3)"
    assert all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs["stop_reason"] == "checkpoint store" for t in trials)
    assert "ADAMP_TUNE_CHECKPOINT_URL" in trials[-1].user_attrs["error"]
    with parts[0]() as session:
        assert repository.get_study(session, study.id).status == "completed"


def test_retention_keeps_the_best_trial_and_removes_deleted_studies(
    parts: Parts, tmp_path: Path
) -> None:
    sessions, storage = parts
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    study = _submit(parts, "kept", n_trials=3, max_concurrent=3)
    _run(parts, study, ThreadCluster(cpus=4), store.url)
    best = optuna.load_study(study_name="kept", storage=storage).best_trial.number
    assert store.lineages(study.id) == [0, 1, 2]
    store.save(999, 0, encode(0, {}))  # a study the database no longer has

    assert sweep(store, sessions, storage, retention_s=3600).checkpoints == 0
    assert store.lineages(study.id) == [0, 1, 2], "within the retention everything stays"
    assert store.studies() == [study.id]

    with sessions.begin() as session:
        session.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(finished_at=utcnow() - timedelta(hours=2))
        )
    assert sweep(store, sessions, storage, retention_s=3600).checkpoints == 2
    assert store.lineages(study.id) == [best]
