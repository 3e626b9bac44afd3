"""Importances stay bounded in cost: fANOVA sees at most the latest ``MAX_TRIALS`` trials."""

from __future__ import annotations

import optuna
import pytest

from service import importance


def _study(n: int) -> optuna.Study:
    study = optuna.create_study(study_name="imp", storage=optuna.storages.InMemoryStorage())
    study.optimize(
        lambda t: (
            t.suggest_float("lr", 1e-4, 1.0, log=True) * 3
            + t.suggest_float("delta", 0.0, 1.0) * (t.number % 7) / 10
        ),
        n_trials=n,
    )
    return study


def test_importances_use_the_latest_trials_only(monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(30)
    monkeypatch.setattr(importance, "MAX_TRIALS", 10)
    answer = importance.importances(study._storage, "imp", ["lr", "delta"])
    assert answer["n_complete"] == 30
    assert answer["n_used"] == 10
    assert "latest 10 of 30" in answer["note"]
    latest = optuna.create_study()
    latest.add_trials(study.trials[-10:])
    expected = optuna.importance.get_param_importances(
        latest,
        params=["lr", "delta"],
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
    )
    assert answer["importances"] == pytest.approx(dict(expected))


def test_small_studies_say_why_there_is_no_answer() -> None:
    one = _study(1)
    assert "at least 2" in importance.importances(one._storage, "imp", ["lr", "delta"])["note"]
    few = _study(5)
    single = importance.importances(few._storage, "imp", ["lr"])
    assert single["importances"] == {"lr": 1.0}
    full = importance.importances(few._storage, "imp", ["lr", "delta"])
    assert full["n_used"] == 5
    assert full["note"] is None
    assert sum(full["importances"].values()) == pytest.approx(1.0)
