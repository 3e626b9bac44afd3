"""The trial runner as a plain generator: event order, errors, stopping, plug-in workloads."""

from __future__ import annotations

import pickle
import threading
import time
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from workers import registry
from workers.context import TrialContext
from workers.messages import Finished, Placement, Report, Started, TrialRequest
from workers.registry import UnknownWorkload, Workload, all_workloads, get_workload
from workers.runner import run_trial

PLACE = Placement("node", "127.0.0.1", "host", 1)


def _request(workload: str = "synthetic", **args: Any) -> TrialRequest:
    spec = get_workload(workload).args
    full = {k: args.get(k, s.default) for k, s in spec.items()}
    return TrialRequest(1, 0, workload, "adamp", {"lr": 3e-3}, full, seed=5)


def _trial_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trial-")]


def test_events_come_in_order_and_the_result_is_the_last_report() -> None:
    events = list(run_trial(_request(steps=4), PLACE, poll_s=0.01))
    assert isinstance(events[0], Started)
    assert events[0].placement == PLACE
    assert events[0].device == "cpu"
    reports = [e for e in events if isinstance(e, Report)]
    assert [r.step for r in reports] == [0, 1, 2, 3]
    assert all(r.elapsed_s >= 0 for r in reports)
    assert isinstance(events[-1], Finished)
    assert events[-1].value == reports[-1].value
    assert events[-1].steps == 4


def test_the_workloads_own_error_is_raised_to_the_caller() -> None:
    stream = run_trial(_request(fail_rate=1.0), PLACE, poll_s=0.01)
    assert isinstance(next(stream), Started)
    with pytest.raises(RuntimeError, match="synthetic failure"):
        list(stream)
    assert not _trial_threads()


def test_closing_the_stream_stops_the_workload_at_its_next_report() -> None:
    stream = run_trial(_request(steps=10_000, sleep_s=0.01), PLACE, poll_s=0.01)
    seen = [next(stream) for _ in range(4)]
    assert [type(e) for e in seen] == [Started, Report, Report, Report]
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 2
    assert not _trial_threads(), "no trial keeps training after it was stopped"


def test_a_non_finite_report_fails_the_trial() -> None:
    def diverge(ctx: TrialContext) -> float:
        ctx.report(float("nan"), 0)
        return 0.0

    registry._BUILTINS["diverges"] = Workload("diverges", diverge, "loss", "minimize", "test")
    try:
        with pytest.raises(ValueError, match="non-finite"):
            list(run_trial(_request("diverges"), PLACE, poll_s=0.01))
    finally:
        del registry._BUILTINS["diverges"]


def test_steps_must_increase() -> None:
    def backwards(ctx: TrialContext) -> float:
        ctx.report(1.0, 3)
        ctx.report(1.0, 2)
        return 1.0

    registry._BUILTINS["backwards"] = Workload("backwards", backwards, "loss", "minimize", "test")
    try:
        with pytest.raises(ValueError, match="must increase"):
            list(run_trial(_request("backwards"), PLACE, poll_s=0.01))
    finally:
        del registry._BUILTINS["backwards"]


def _plugin(ctx: TrialContext) -> float:
    ctx.report(0.5, 0)
    return 0.25


PLUGIN = Workload("team-model", _plugin, "loss", "minimize", "a team's own workload")


def test_workloads_installed_through_entry_points_are_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = EntryPoint("team-model", "tests.workers.test_runner:PLUGIN", registry.ENTRY_POINT_GROUP)
    broken = EntryPoint("broken", "no_such_module:thing", registry.ENTRY_POINT_GROUP)
    clash = EntryPoint("clash", "workers.builtin.synthetic:WORKLOAD", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [good, broken, clash])
    monkeypatch.setattr(registry, "_plugins", None)  # forget an earlier scan
    found = all_workloads()
    assert {"digits-cnn", "synthetic", "team-model"} <= set(found)
    assert found["synthetic"].train is not _plugin, "a plug-in cannot replace a built-in"
    events = list(run_trial(_request("team-model"), PLACE, poll_s=0.01))
    assert isinstance(events[-1], Finished)
    assert events[-1].value == 0.25
    with pytest.raises(KeyError):
        get_workload("broken")


def test_a_workload_missing_on_the_worker_fails_the_trial_naming_it() -> None:
    request = TrialRequest(1, 0, "team-model-not-installed", "adamp", {}, {}, seed=5)
    stream = run_trial(request, PLACE, poll_s=0.01)
    with pytest.raises(UnknownWorkload) as raised:
        next(stream)
    message = str(raised.value)
    assert "'team-model-not-installed' is not installed on host" in message
    assert "digits-cnn" in message, "it says what is installed instead"
    assert "\n" not in message, "one line: the scheduler records an error's last line"
    # Ray pickles the error on the worker and raises it again in the scheduler.
    assert str(pickle.loads(pickle.dumps(raised.value))) == message
    assert isinstance(raised.value, KeyError), "callers catching KeyError still do"
    assert not _trial_threads()


def test_a_plugin_installed_after_the_last_scan_is_found_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that scanned before the package was installed finds it at its next trial."""
    installed: list[EntryPoint] = []
    monkeypatch.setattr(registry, "entry_points", lambda group: list(installed))
    monkeypatch.setattr(registry, "_plugins", None)
    assert "team-model" not in all_workloads()
    installed.append(
        EntryPoint("team-model", "tests.workers.test_runner:PLUGIN", registry.ENTRY_POINT_GROUP)
    )
    assert get_workload("team-model") is PLUGIN
