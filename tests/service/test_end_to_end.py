"""The product's main path through the public API, against SQLite and PostgreSQL.

A real service process, a real two-node Ray cluster, real training of the digits CNN.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest

from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, submit, wait_for

pytestmark = pytest.mark.ray

EPOCHS = 6


def _max_overlap(trials: list[dict]) -> int:
    """Largest number of trials that certainly ran at the same instant: a trial's training
    (``duration_s``, timed by its worker) lies between the service's ask and its tell, which
    is written after the trial ends (off the scheduler's loop), so it covers at least
    ``[told - duration, asked + duration]``."""
    edges = []
    for t in trials:
        asked = datetime.fromisoformat(t["datetime_start"])
        told = datetime.fromisoformat(t["datetime_complete"])
        duration = timedelta(seconds=t["duration_s"])
        edges += [(told - duration, 1), (asked + duration, -1)]
    running = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


def test_digits_study_runs_to_completion_and_is_readable_by_optuna(
    api, service: ServiceProcess, unique_name: str
) -> None:
    study = submit(
        api,
        name=unique_name,
        workload="digits-cnn",
        optimizer="adamp",
        search_space={
            "lr": {"low": 1e-3, "high": 3e-2, "log": True},
            "delta": {"low": 0.01, "high": 1.0, "log": True},
            "wd_ratio": {"low": 0.0, "high": 1.0},
        },
        fixed={"weight_decay": 1e-4, "epochs": EPOCHS},
        n_trials=6,
        max_concurrent=2,
        sampler="tpe",
        pruner="none",
        seed=7,
    )
    assert study["status"] == "queued"
    assert study["metric"] == "val_accuracy"
    assert study["direction"] == "maximize"

    done = wait_for(api, study["id"], timeout_s=300)
    assert done["status"] == "completed", done
    assert done["stop_reason"] == "n_trials"
    assert done["counts"] == {
        "complete": 6,
        "running": 0,
        "waiting": 0,
        "pruned": 0,
        "fail": 0,
        "finished": 6,
        "retried": 0,
    }
    assert done["best_trial"]["value"] > 0.9
    assert done["started_at"]
    assert done["finished_at"]
    assert done["elapsed_s"] > 0

    trials = all_trials(api, study["id"])
    assert [t["number"] for t in trials] == list(range(6))
    for t in trials:
        assert t["state"] == "complete"
        assert set(t["params"]) == {"lr", "delta", "wd_ratio"}
        assert 1e-3 <= t["params"]["lr"] <= 3e-2
        assert [iv["step"] for iv in t["intermediate_values"]] == list(range(EPOCHS))
        assert t["value"] == t["intermediate_values"][-1]["value"]
        assert t["node"]["node_id"]
        assert t["node"]["pid"] > 0
        assert t["device"] == "cpu"
        assert t["attempts"] == 1
        assert t["duration_s"] > 0
        assert 0.0 <= t["scale_invariant_fraction"] <= 1.0
    assert _max_overlap(trials) <= 2

    best = done["best_trial"]
    assert best["value"] == max(t["value"] for t in trials)
    detail = api.get(f"/api/v1/studies/{study['id']}/trials/{best['number']}").json()
    assert detail["params"] == best["params"]

    # The same trials through Optuna's own API on the same database.
    loaded = optuna.load_study(study_name=unique_name, storage=service.database_url)
    frozen = loaded.get_trials()
    assert len(frozen) == 6
    assert all(f.state == optuna.trial.TrialState.COMPLETE for f in frozen)
    by_number = {t["number"]: t for t in trials}
    for f in frozen:
        assert f.params == pytest.approx(by_number[f.number]["params"])
        assert f.value == pytest.approx(by_number[f.number]["value"])
    assert loaded.best_value == pytest.approx(best["value"])
