"""A comparison's report, read from its studies' trials in Optuna's tables."""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from db.models import Comparison, ComparisonStudy, Study
from service.comparisons import stats
from service.comparisons.schemas import PAIRS
from workers.registry import all_workloads

ATTR_SIF = "scale_invariant_fraction"  # written by the scheduler (service.scheduler.core)
ATTR_RETRIED = "retried"  # the scheduler's mark on a failure it ran again
ATTR_SEED = "seed"  # written by the trial runner (workers.runner)
ATTR_WEIGHT_NORMS = "weight_norms"  # written by workloads that track them


def _trials(storage: optuna.storages.BaseStorage, study: Study | None) -> list[FrozenTrial]:
    if study is None or study.optuna_study_id is None:
        return []
    return sorted(
        storage.get_all_trials(study.optuna_study_id, deepcopy=False), key=lambda t: t.number
    )


def _best(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(
        complete,
        key=lambda t: (t.value, -t.number) if direction == "maximize" else (t.value, t.number),
    )


def best_params(storage: optuna.storages.BaseStorage, study: Study) -> dict[str, Any] | None:
    """The parameters of the study's best complete trial (``None``: no complete trial)."""
    best = _best(_trials(storage, study), study.direction)
    return dict(best.params) if best is not None else None


def _mean_curve(curves: list[list[float]]) -> list[float] | None:
    curves = [c for c in curves if c]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(length)]


def _evaluation(
    trials: list[FrozenTrial],
) -> tuple[dict[str, Any] | None, dict[int | None, float] | list[float]]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not trials:
        return None, []
    values = [float(t.value) for t in complete if t.value is not None]
    seeds = [t.user_attrs.get(ATTR_SEED) for t in complete]
    out = {**stats.summary(values), "values": values, "seeds": seeds}
    if all(isinstance(s, int) for s in seeds) and len(set(seeds)) == len(seeds):
        return out, dict(zip(seeds, values, strict=True))
    return out, values


def build(
    storage: optuna.storages.BaseStorage,
    comparison: Comparison,
    parts: list[tuple[ComparisonStudy, Study]],
    final: bool,
) -> dict[str, Any]:
    """The report as it stands (``final``: every study has ended)."""
    spec = comparison.spec
    direction: str = spec.get("direction") or "maximize"
    workload = all_workloads().get(comparison.workload)
    metric = workload.metric if workload is not None else None
    by_role = {(link.optimizer, link.role): study for link, study in parts}
    optimizers: list[dict[str, Any]] = []
    samples: dict[str, dict[int | None, float] | list[float]] = {}
    curves: dict[str, list[float | None]] = {}
    for name in spec["optimizers"]:
        tuning = _trials(storage, by_role.get((name, "tune")))
        evaluation = _trials(storage, by_role.get((name, "eval")))
        # Every trial the budget paid for: complete, pruned, or failed for good (a failure
        # re-run after a crash is counted once, by its re-run).
        finished = [
            t
            for t in tuning
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get(ATTR_RETRIED))
        ]
        curve = stats.best_so_far(
            [t.value if t.state == TrialState.COMPLETE else None for t in finished], direction
        )
        best = _best(tuning, direction)
        evaluated, samples[name] = _evaluation(evaluation)
        curves[name] = curve
        sif = [
            float(t.user_attrs[ATTR_SIF])
            for t in tuning + evaluation
            if t.state == TrialState.COMPLETE and t.user_attrs.get(ATTR_SIF) is not None
        ]
        norms = [
            [float(x) for x in t.user_attrs[ATTR_WEIGHT_NORMS]]
            for t in evaluation
            if t.state == TrialState.COMPLETE
            and isinstance(t.user_attrs.get(ATTR_WEIGHT_NORMS), list)
        ]
        optimizers.append(
            {
                "optimizer": name,
                "best_tuned_value": best.value if best is not None else None,
                "best_params": dict(best.params) if best is not None else None,
                "tuning_trials": len(finished),
                "best_so_far": curve,
                "evaluation": evaluated,
                "scale_invariant_fraction": statistics.fmean(sif) if sif else None,
                "weight_norms": _mean_curve(norms),
            }
        )
    present = spec["optimizers"]
    pairs = [(a, b) for a, b in PAIRS if a in present and b in present]
    if not pairs:
        pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1 :]]
    by_name = {o["optimizer"]: o for o in optimizers}
    pair_reports = []
    for a, b in pairs:
        diff = stats.difference(samples[a], samples[b])
        better, sentence = stats.verdict(a, b, diff, direction, metric or "value")
        norms_a, norms_b = by_name[a]["weight_norms"], by_name[b]["weight_norms"]
        pair_reports.append(
            {
                "a": a,
                "b": b,
                "difference": diff.difference,
                "ci95": diff.ci95,
                "test": diff.test,
                "statistic": diff.statistic,
                "p_value": diff.p_value,
                "significant": diff.significant,
                "better": better,
                "verdict": sentence,
                "trials_to_reach_other_best": {
                    a: stats.trials_to_reach(curves[a], by_name[b]["best_tuned_value"], direction),
                    b: stats.trials_to_reach(curves[b], by_name[a]["best_tuned_value"], direction),
                },
                "weight_norm_ratio": (
                    norms_a[-1] / norms_b[-1] if norms_a and norms_b and norms_b[-1] else None
                ),
            }
        )
    sentences = " ".join(str(p["verdict"]) for p in pair_reports)
    return {
        "metric": metric,
        "direction": direction,
        "final": final,
        "optimizers": optimizers,
        "pairs": pair_reports,
        "verdict": sentences if final else f"(so far, still running) {sentences}",
    }
