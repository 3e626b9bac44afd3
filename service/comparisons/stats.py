"""The statistics of a comparison's report, on plain lists of numbers (scipy.stats).

Each optimizer's evaluation studies use the same list of seeds (the n-th trial of every
evaluation study gets the same seed), so two optimizers' values are paired by seed, and a
paired t-test applies; where the seeds do not match one for one (a trial re-run after a
crash gets a new seed), Welch's t-test, which assumes neither pairing nor equal variances.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05
# scipy.stats is imported where a report is computed, not with this module: it is a third
# of a second of every service start, and most services never build a comparison report.
PAIRED_TEST = "paired t-test (scipy.stats.ttest_rel), pairs matched by seed"
WELCH_TEST = "Welch's t-test (scipy.stats.ttest_ind, equal_var=False)"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _no_spread(values: list[float], mean: float) -> bool:
    """Whether ``values`` are equal up to rounding (a t-test on them is meaningless)."""
    return statistics.pstdev(values) <= 1e-12 * max(1.0, abs(mean))


def _exact(mean: float) -> float:
    """The p-value of a difference without spread: t is infinite unless it is zero."""
    return 1.0 if mean == 0 else 0.0


def summary(values: list[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation and the t-interval of the mean at 95%."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    if std == 0:
        return {"n": n, "mean": mean, "std": 0.0, "ci95": [mean, mean]}
    from scipy import stats as scipy_stats  # noqa: PLC0415 - see ALPHA's note

    low, high = scipy_stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci95": [float(low), float(high)]}


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` with its 95% interval and test."""

    difference: float | None
    ci95: list[float] | None
    test: str
    statistic: float | None
    p_value: float | None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


def difference(
    a: dict[int | None, float] | list[float], b: dict[int | None, float] | list[float]
) -> Difference:
    """Test ``a`` against ``b``: paired by seed when both are ``{seed: value}`` over the same
    seeds, otherwise Welch's."""
    from scipy import stats as scipy_stats  # noqa: PLC0415 - see ALPHA's note

    if isinstance(a, dict) and isinstance(b, dict) and None not in a and set(a) == set(b):
        seeds = sorted(a, key=lambda s: s or 0)
        xs, ys = [a[s] for s in seeds], [b[s] for s in seeds]
        if len(xs) < 2:
            return Difference(None, None, PAIRED_TEST, None, None)
        diffs = [x - y for x, y in zip(xs, ys, strict=True)]
        mean = statistics.fmean(diffs)
        if _no_spread(diffs, mean):  # the same difference on every seed
            return Difference(mean, [mean, mean], PAIRED_TEST, None, _exact(mean))
        paired = scipy_stats.ttest_rel(xs, ys)
        ci = paired.confidence_interval(0.95)
        return Difference(
            mean,
            [float(ci.low), float(ci.high)],
            PAIRED_TEST,
            _finite(paired.statistic),
            _finite(paired.pvalue),
        )
    xs = list(a.values()) if isinstance(a, dict) else list(a)
    ys = list(b.values()) if isinstance(b, dict) else list(b)
    if len(xs) < 2 or len(ys) < 2:
        return Difference(None, None, WELCH_TEST, None, None)
    mean = statistics.fmean(xs) - statistics.fmean(ys)
    if _no_spread(xs, statistics.fmean(xs)) and _no_spread(ys, statistics.fmean(ys)):
        return Difference(mean, [mean, mean], WELCH_TEST, None, _exact(mean))
    welch = scipy_stats.ttest_ind(xs, ys, equal_var=False)
    ci = welch.confidence_interval(0.95)
    return Difference(
        mean,
        [float(ci.low), float(ci.high)],
        WELCH_TEST,
        _finite(welch.statistic),
        _finite(welch.pvalue),
    )


def best_so_far(values: list[float | None], direction: str) -> list[float | None]:
    """The best value after each trial (``None`` before the first complete one)."""
    pick = max if direction == "maximize" else min
    best: float | None = None
    curve: list[float | None] = []
    for value in values:
        if value is not None:
            best = value if best is None else pick(best, value)
        curve.append(best)
    return curve


def trials_to_reach(curve: list[float | None], target: float | None, direction: str) -> int | None:
    """How many trials the curve took to be at least as good as ``target`` (``None``: never)."""
    if target is None:
        return None
    for count, value in enumerate(curve, start=1):
        if value is not None and (value >= target if direction == "maximize" else value <= target):
            return count
    return None


LABELS = {"adamp": "AdamP", "sgdp": "SGDP", "adamw": "AdamW", "sgd": "SGD"}


def verdict(
    a: str, b: str, diff: Difference, direction: str, metric: str
) -> tuple[str | None, str]:
    """The better optimizer (``None`` within noise) and one plain sentence."""
    la, lb = LABELS.get(a, a), LABELS.get(b, b)
    if diff.difference is None:
        return None, f"{la} vs {lb}: not enough evaluation seeds to compare."
    ci = f"95% CI {diff.ci95[0]:+.4g} to {diff.ci95[1]:+.4g}" if diff.ci95 else "no CI"
    p = f"p = {diff.p_value:.3g}" if diff.statistic is not None else "the same on every seed"
    test = diff.test.split(" (")[0]
    shown = f"{la} - {lb} = {diff.difference:+.4g} {metric} ({ci}; {test}, {p})"
    if not diff.significant:
        return None, f"{la} vs {lb}: within noise: {shown}."
    a_better = (diff.difference > 0) == (direction == "maximize")
    winner, loser = (la, lb) if a_better else (lb, la)
    return (a if a_better else b), f"{winner} beats {loser}: {shown}."
