"""The scheduler without a service: an executor whose chosen trials crash, and the
studies its tests submit and wait for (tests/service/test_scheduler*.py)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker

from db.engine import create_db_engine, session_factory
from db.migrate import upgrade
from db.models import Study
from service import repository
from service.cluster import Crashed, Event
from service.cluster.threads import ThreadCluster, _ThreadTrial
from service.optuna_glue import storage_for
from service.schemas import StudyCreate
from workers.messages import Placement, Started, TrialRequest

Parts = tuple[sessionmaker[Session], optuna.storages.BaseStorage]


@contextmanager
def migrated(url: str) -> Iterator[Parts]:
    """The database at ``url``, migrated, as a scheduler takes it: sessions and its Optuna
    storage; every connection closed afterwards."""
    engine = create_db_engine(url)
    upgrade(engine)
    storage = storage_for(url)
    try:
        yield session_factory(engine), storage
    finally:
        storage.remove_session()
        storage.engine.dispose()
        engine.dispose()


class FlakyExecutor(ThreadCluster):
    """Runs trials in threads, except that chosen submissions (0-based, in order) crash."""

    def __init__(
        self, crash: set[int] | None = None, crash_all: bool = False, cpus: float = 4
    ) -> None:
        super().__init__(cpus=cpus)
        self.crash = crash or set()
        self.crash_all = crash_all
        self.submitted: list[TrialRequest] = []

    def submit(self, request: TrialRequest, *, cpus: float, gpus: float) -> Any:
        index = len(self.submitted)
        self.submitted.append(request)
        if self.crash_all or index in self.crash:
            trial = _ThreadTrial(queue.Queue(), threading.Event(), cpus, gpus)
            trial.outcomes.put(Event(Started(Placement("n", "127.0.0.1", "h", 1), "cpu")))
            trial.outcomes.put(Crashed("WorkerCrashedError: the worker died"))
            return trial
        return super().submit(request, cpus=cpus, gpus=gpus)


def submit_study(sessions, storage, name: str, owner: str = "tester", **fields: Any) -> Study:
    """A synthetic study (6 trials of 3 steps, 2 at a time, random sampler) with ``fields``
    overriding the defaults, submitted as ``owner``."""
    body: dict[str, Any] = {
        "name": name,
        "workload": "synthetic",
        "optimizer": "adamp",
        "sampler": "random",
        "pruner": "none",
        "seed": 3,
        "n_trials": 6,
        "max_concurrent": 2,
        "fixed": {"steps": 3},
    }
    body.update(fields)
    return repository.create_study(sessions, storage, StudyCreate(**body), owner=owner)


def wait_status(sessions, study_id: int, statuses: tuple[str, ...], timeout_s: float = 60) -> Study:
    """The study once its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions() as session:
            study = repository.get_study(session, study_id)
        if study.status in statuses:
            return study
        time.sleep(0.05)
    raise AssertionError(f"study {study_id} is still {study.status}")


def trials_of(storage, name: str) -> list[optuna.trial.FrozenTrial]:
    """The Optuna trials of study ``name``, as the storage has them now."""
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
