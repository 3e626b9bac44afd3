"""The dashboard's plots stay drawable on big studies (no browser needed for these)."""

from __future__ import annotations

import optuna
import pytest

from service.dashboard.plots import MAX_CONTOUR_POINTS, MAX_CURVES, MAX_LINES, study_plots


@pytest.fixture(scope="module")
def big_study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        wd_ratio = trial.suggest_float("wd_ratio", 0.0, 1.0)
        for step in range(3):
            trial.report(lr + wd_ratio + 1.0 / (step + 1), step)
        return lr + wd_ratio

    study.optimize(objective, n_trials=MAX_LINES + 50)
    return study


def _figure(plots: dict, key: str) -> dict:
    return next(p for p in plots["plots"] if p["key"] == key)


def test_big_studies_draw_a_bounded_number_of_curves_and_lines(big_study: optuna.Study) -> None:
    plots = study_plots(big_study, "fast")
    n = len(big_study.trials)
    curves = _figure(plots, "intermediate")
    lines = _figure(plots, "parallel")
    assert len(curves["figure"]["data"]) <= MAX_CURVES
    assert f"{MAX_CURVES} of {n} trials" in curves["title"]
    # One trace per drawn trial, plus Plotly's colour-bar helper traces.
    assert MAX_LINES <= len(lines["figure"]["data"]) <= MAX_LINES + 3
    assert f"{MAX_LINES} of {n} trials" in lines["title"]
    # The best trial is among the curves, and so is the latest one.
    names = {trace.get("name") for trace in curves["figure"]["data"]}
    assert f"Trial{big_study.best_trial.number}" in names
    assert f"Trial{n - 1}" in names
    # Plots of single points keep every trial.
    history = _figure(plots, "history")
    assert len(history["figure"]["data"][0]["x"]) == n


def test_the_slow_half_has_importances_and_contours(big_study: optuna.Study) -> None:
    plots = study_plots(big_study, "slow")
    # No delta in this study: the lr x delta contour is left out, not drawn empty.
    assert {p["key"] for p in plots["plots"]} == {"importance", "contour-lr-wd_ratio"}
    importance = _figure(plots, "importance")["figure"]["data"][0]
    assert set(importance["y"]) == {"lr", "wd_ratio"}
    contour = _figure(plots, "contour-lr-wd_ratio")
    assert f"{MAX_CONTOUR_POINTS} of {len(big_study.trials)} trials" in contour["title"]
    # The contour's grid is bounded by the trials it is drawn from.
    grid = next(t for t in contour["figure"]["data"] if t["type"] == "contour")
    assert len(grid["x"]) <= MAX_CONTOUR_POINTS + 2
