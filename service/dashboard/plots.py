"""Optuna's own plots of a study (``optuna.visualization``) as Plotly JSON for the dashboard."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

CONTOUR_PAIRS = (("lr", "wd_ratio"), ("lr", "delta"))


def _varied_params(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Parameters that take at least two values over ``trials``, in first-seen order."""
    seen: dict[str, set[str]] = {}
    for trial in trials:
        for key, value in trial.params.items():
            seen.setdefault(key, set()).add(repr(value))
    return [key for key, values in seen.items() if len(values) > 1]


def _plot(
    key: str, title: str, build: Callable[[], Any], note: str | None = None
) -> dict[str, Any]:
    """One plot to draw (lazily: ``build`` runs only if the plot is asked for)."""
    return {"key": key, "title": title, "build": build, "note": note}


def _render(plot: dict[str, Any]) -> dict[str, Any]:
    """One plot's entry: Plotly's figure as JSON, or a note saying why there is none."""
    key, title, note = plot["key"], plot["title"], plot["note"]
    if note is not None:
        return {"key": key, "title": title, "figure": None, "note": note}
    try:
        figure = json.loads(plot["build"]().to_json())
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        log.info("no %s plot: %s", key, err)
        return {"key": key, "title": title, "figure": None, "note": f"cannot plot: {err}"}
    return {"key": key, "title": title, "figure": figure, "note": None}


def _contour(study: optuna.Study, x: str, y: str) -> Callable[[], Any]:
    return lambda: optuna.visualization.plot_contour(study, params=[x, y])


FAST = "fast"
"""Plots drawn straight from the trials (history, curves, parallel coordinates, slices)."""
SLOW = "slow"
"""Plots that fit a model first (fANOVA importances, interpolated contours): seconds on a
study of thousands of trials, so the page asks for them after the fast ones."""
SLOW_KEYS = ("importance", "contour-")


MAX_CURVES = 100
"""Learning curves drawn at most (Plotly draws one trace per trial: thousands stall a
browser for minutes); a big study shows its best and its latest."""
MAX_LINES = 300
"""Lines drawn at most in the parallel-coordinates plot, for the same reason."""
MAX_CONTOUR_POINTS = 200
"""Trials a contour is interpolated from: Optuna grids the contour on the distinct values
of both parameters, so its size grows with the square of the trials (5,000 trials made a
267 MB figure)."""


def _best_and_latest(study: optuna.Study, keep: int) -> tuple[optuna.Study, str, list[int]]:
    """``study`` itself when it has at most ``keep`` finished trials; otherwise an in-memory
    copy holding the best half and the latest half of them, a title suffix saying so, and
    the original number of each copied trial (the copy numbers them from 0)."""
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    if len(finished) <= keep:
        return study, "", []
    scored = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = sorted(scored, key=lambda t: t.value or 0.0, reverse=maximize)[: keep // 2]
    chosen = {t.number: t for t in best}
    for trial in sorted(finished, key=lambda t: t.number, reverse=True):
        if len(chosen) >= keep:
            break
        chosen.setdefault(trial.number, trial)
    numbers = sorted(chosen)
    view = optuna.create_study(direction=study.direction)
    view.add_trials([chosen[k] for k in numbers])
    note = f" ({len(chosen)} of {len(finished)} trials: the {len(best)} best, the latest)"
    return view, note, numbers


def _renumbered(build: Callable[[], Any], numbers: list[int]) -> Callable[[], Any]:
    """``build``, with trace names ``Trial<k>`` of a copied study mapped back to the
    original trial numbers."""
    if not numbers:
        return build

    def run() -> Any:
        figure = build()
        for trace in figure.data:
            name = trace.name or ""
            if name.startswith("Trial") and name[5:].isdigit() and int(name[5:]) < len(numbers):
                trace.name = f"Trial{numbers[int(name[5:])]}"
        return figure

    return run


def study_plots_at(database_url: str, study_name: str, group: str | None) -> dict[str, Any]:
    """``study_plots`` of a study on the database at ``database_url``: what the service's
    worker process runs (``service.offload``), so that fANOVA and Plotly never hold the
    service's interpreter lock."""
    from service.offload import storage  # noqa: PLC0415 - the worker's storages

    return study_plots(
        optuna.load_study(study_name=study_name, storage=storage(database_url)), group
    )


def study_plots(study: optuna.Study, group: str | None = None) -> dict[str, Any]:
    """The dashboard plots of ``study`` (all, or one ``group``: ``FAST`` or ``SLOW``); a plot
    that the trials cannot support is a note."""
    vis = optuna.visualization
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(complete)
    varied = _varied_params(complete)
    params = sorted({k for t in complete for k in t.params})
    has_intermediate = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    too_few = None if n >= 2 else f"needs at least 2 complete trials ({n} so far)"
    curves, curves_note, curve_numbers = _best_and_latest(study, MAX_CURVES)
    lines, lines_note, _ = _best_and_latest(study, MAX_LINES)
    contour_view, contour_note, _ = _best_and_latest(study, MAX_CONTOUR_POINTS)
    plots = [
        _plot(
            "history",
            "Optimization history",
            lambda: vis.plot_optimization_history(study),
            None if n >= 1 else "no complete trial yet",
        ),
        _plot(
            "intermediate",
            "Intermediate values" + curves_note,
            _renumbered(lambda: vis.plot_intermediate_values(curves), curve_numbers),
            None if has_intermediate else "no trial has reported intermediate values yet",
        ),
        _plot(
            "importance",
            "Parameter importances (PED-ANOVA)",
            # PED-ANOVA: the same ranking as fANOVA on this project's studies in a fortieth of
            # the time (0.1 s against 4 s for 300 trials), so a big study's page stays live.
            lambda: vis.plot_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            ),
            too_few or (None if varied else "no parameter varies across the complete trials"),
        ),
    ]
    for x, y in CONTOUR_PAIRS:
        if x in params and y in params:
            both_vary = x in varied and y in varied
            plots.append(
                _plot(
                    f"contour-{x}-{y}",
                    f"Contour: {x} vs {y}" + contour_note,
                    _contour(contour_view, x, y),
                    too_few or (None if both_vary else f"{x} and {y} must both vary"),
                )
            )
    plots += [
        _plot(
            "parallel",
            "Parallel coordinates" + lines_note,
            lambda: vis.plot_parallel_coordinate(lines),
            too_few,
        ),
        _plot(
            "slice",
            "Slice",
            lambda: vis.plot_slice(study),
            None if n >= 1 else "no complete trial yet",
        ),
    ]
    if group is not None:
        plots = [p for p in plots if p["key"].startswith(SLOW_KEYS) == (group == SLOW)]
    return {"n_complete": n, "plots": [_render(p) for p in plots]}


# --- comparisons -------------------------------------------------------------------------

_COLORS = {"adamp": "#d62728", "adamw": "#1f77b4", "sgdp": "#ff7f0e", "sgd": "#2ca02c"}


def comparison_plots(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A comparison's figures (Plotly JSON): tuning curves side by side, the evaluation
    seeds' values, and the weight norms of each best configuration over training."""
    import plotly.graph_objects as go  # noqa: PLC0415 - plotly loads only for pages

    metric = report.get("metric") or "value"
    tuning, seeds, norms = go.Figure(), go.Figure(), go.Figure()
    for o in report["optimizers"]:
        name, color = o["optimizer"], _COLORS.get(o["optimizer"])
        curve = o.get("best_so_far") or []
        tuning.add_trace(
            go.Scatter(
                x=list(range(1, len(curve) + 1)),
                y=curve,
                mode="lines+markers",
                name=name,
                line={"color": color, "shape": "hv"},
            )
        )
        values = (o.get("evaluation") or {}).get("values") or []
        seeds.add_trace(
            go.Box(y=values, name=name, boxpoints="all", jitter=0.3, marker_color=color)
        )
        if o.get("weight_norms"):
            norms.add_trace(
                go.Scatter(
                    x=list(range(len(o["weight_norms"]))),
                    y=o["weight_norms"],
                    mode="lines",
                    name=name,
                    line={"color": color},
                )
            )
    tuning.update_layout(
        title="Best so far against tuning trials",
        xaxis_title="tuning trials",
        yaxis_title=f"best {metric}",
    )
    seeds.update_layout(title="Best configuration re-trained on fresh seeds", yaxis_title=metric)
    norms.update_layout(
        title="Norm of the scale-invariant weights (best configuration, mean over seeds)",
        xaxis_title="epoch (0: at initialisation)",
        yaxis_title="L2 norm",
    )
    out = [
        {"key": "tuning", "title": "Tuning efficiency", "figure": json.loads(tuning.to_json())},
        {"key": "seeds", "title": "Evaluation seeds", "figure": json.loads(seeds.to_json())},
    ]
    if norms.data:
        out.append(
            {"key": "weight-norms", "title": "Weight norms", "figure": json.loads(norms.to_json())}
        )
    else:
        out.append(
            {
                "key": "weight-norms",
                "title": "Weight norms",
                "figure": None,
                "note": "the workload does not report the norms of its weights",
            }
        )
    return out
