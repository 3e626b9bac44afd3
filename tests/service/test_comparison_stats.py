"""The comparison report's statistics agree with scipy.stats on the same numbers."""

from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from service.comparisons import stats


def test_summary_is_the_t_interval_of_the_mean() -> None:
    values = [0.91, 0.93, 0.90, 0.95, 0.92]
    out = stats.summary(values)
    assert out["n"] == 5
    assert out["mean"] == pytest.approx(sum(values) / 5)
    assert out["std"] == pytest.approx(float(scipy_stats.tstd(values)))
    low, high = scipy_stats.t.interval(0.95, 4, loc=out["mean"], scale=scipy_stats.sem(values))
    assert out["ci95"] == pytest.approx([low, high])


def test_seeds_that_match_are_paired_and_others_are_welch() -> None:
    a = {1: 0.95, 2: 0.93, 3: 0.96, 4: 0.94}
    b = {1: 0.94, 2: 0.93, 3: 0.94, 4: 0.92}
    paired = stats.difference(a, b)
    expected = scipy_stats.ttest_rel(list(a.values()), list(b.values()))
    assert paired.test.startswith("paired t-test")
    assert paired.p_value == pytest.approx(expected.pvalue)
    assert paired.statistic == pytest.approx(expected.statistic)
    ci = expected.confidence_interval(0.95)
    assert paired.ci95 == pytest.approx([ci.low, ci.high])
    assert paired.difference == pytest.approx((0.01 + 0.0 + 0.02 + 0.02) / 4)

    b_other_seeds = {k + 10: v for k, v in b.items()}
    welch = stats.difference(a, b_other_seeds)
    expected = scipy_stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert welch.test.startswith("Welch's t-test")
    assert welch.p_value == pytest.approx(expected.pvalue)
    ci = expected.confidence_interval(0.95)
    assert welch.ci95 == pytest.approx([ci.low, ci.high])


def test_verdict_says_within_noise_unless_significant() -> None:
    noisy = stats.difference({1: 0.9, 2: 0.8, 3: 0.95}, {1: 0.85, 2: 0.9, 3: 0.9})
    better, sentence = stats.verdict("adamp", "adamw", noisy, "maximize", "accuracy")
    assert better is None
    assert "within noise" in sentence
    assert "paired t-test" in sentence
    clear = stats.difference({1: 0.9, 2: 0.8, 3: 0.95}, {1: 0.7, 2: 0.61, 3: 0.74})
    better, sentence = stats.verdict("adamp", "adamw", clear, "maximize", "accuracy")
    assert better == "adamp"
    assert sentence.startswith("AdamP beats AdamW")
    # For a loss, lower is better: the same numbers make AdamW the winner.
    better, sentence = stats.verdict("adamp", "adamw", clear, "minimize", "loss")
    assert better == "adamw"
    assert sentence.startswith("AdamW beats AdamP")
    # The same difference on every seed has no spread: exact, so significant unless zero.
    same = stats.difference({1: 1.0, 2: 2.0}, {1: 0.5, 2: 1.5})
    assert same.significant
    assert same.ci95 == [0.5, 0.5]
    assert not stats.difference({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}).significant


def test_tuning_efficiency_curves() -> None:
    curve = stats.best_so_far([0.5, None, 0.7, 0.6, 0.9], "maximize")
    assert curve == [0.5, 0.5, 0.7, 0.7, 0.9]
    assert stats.trials_to_reach(curve, 0.7, "maximize") == 3
    assert stats.trials_to_reach(curve, 0.95, "maximize") is None
    low = stats.best_so_far([None, 3.0, 1.0], "minimize")
    assert low == [None, 3.0, 1.0]
    assert stats.trials_to_reach(low, 2.0, "minimize") == 3
