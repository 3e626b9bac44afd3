"""What the API answers about studies, trials, workloads and the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.in_process import InProcessService
from tests.support.studies import all_trials, submit, synthetic, wait_for


@pytest.fixture(scope="module")
def finished(local_service: InProcessService) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    """A completed 12-trial synthetic study over lr, delta and wd_ratio."""
    with httpx.Client(base_url=local_service.url, timeout=30) as api:
        study = submit(
            api,
            **synthetic(
                "reads-finished",
                n_trials=12,
                max_concurrent=2,
                search_space={
                    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                    "delta": {"low": 0.01, "high": 1.0, "log": True},
                    "wd_ratio": {"low": 0.0, "high": 1.0},
                },
                fixed={"steps": 4},
            ),
        )
        yield api, wait_for(api, study["id"], timeout_s=120)


def test_trials_page_filter_and_order(finished) -> None:
    api, study = finished
    base = f"/api/v1/studies/{study['id']}/trials"
    page = api.get(base, params={"limit": 5, "offset": 5}).json()
    assert page["total"] == 12
    assert [t["number"] for t in page["items"]] == [5, 6, 7, 8, 9]
    by_value = api.get(base, params={"order_by": "value"}).json()["items"]
    values = [t["value"] for t in by_value]
    assert values == sorted(values)
    assert by_value[0]["number"] == study["best_trial"]["number"], "minimize: best first"
    desc = api.get(base, params={"order_by": "-value", "limit": 3}).json()["items"]
    assert [t["value"] for t in desc] == sorted(values, reverse=True)[:3]
    durations = [
        t["duration_s"] for t in api.get(base, params={"order_by": "-duration"}).json()["items"]
    ]
    assert len(durations) == 12
    assert all(d is not None for d in durations)
    complete = api.get(base, params={"state": "complete"}).json()
    assert complete["total"] == 12
    assert api.get(base, params={"state": "pruned"}).json() == {"items": [], "total": 0}
    lean = api.get(base, params={"intermediate": "false", "limit": 1}).json()["items"][0]
    assert lean["intermediate_values"] == []


def test_study_summary(finished) -> None:
    api, study = finished
    assert study["status"] == "completed"
    assert study["counts"]["complete"] == 12
    trials = all_trials(api, study["id"])
    assert study["best_trial"]["value"] == min(t["value"] for t in trials)
    assert set(study["search_space"]) == {"lr", "delta", "wd_ratio"}
    assert study["fixed"] == {"steps": 4}
    events = api.get(f"/api/v1/studies/{study['id']}/events").json()
    assert [e["kind"] for e in events] == ["submitted", "started", "completed"]


def test_importance_is_optunas_and_stable(finished, local_service: InProcessService) -> None:
    api, study = finished
    answer = api.get(f"/api/v1/studies/{study['id']}/importance").json()
    assert answer["n_complete"] == 12
    assert answer["evaluator"] == "fanova"
    assert set(answer["importances"]) == {"lr", "delta", "wd_ratio"}
    assert sum(answer["importances"].values()) == pytest.approx(1.0, abs=1e-6)
    again = api.get(f"/api/v1/studies/{study['id']}/importance").json()
    assert again["importances"] == answer["importances"], "no jitter between refreshes"
    loaded = optuna.load_study(study_name=study["name"], storage=local_service.database_url)
    expected = optuna.importance.get_param_importances(
        loaded, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    assert answer["importances"] == pytest.approx(dict(expected))


def test_importance_of_a_study_without_results_says_why(local_api, unique_name: str) -> None:
    study = submit(
        local_api, **synthetic(unique_name, n_trials=1, fixed={"steps": 500, "sleep_s": 0.05})
    )
    answer = local_api.get(f"/api/v1/studies/{study['id']}/importance")
    assert answer.status_code == 200
    assert answer.json()["importances"] == {}
    assert "at least 2" in answer.json()["note"]
    local_api.post(f"/api/v1/studies/{study['id']}/cancel")


def test_list_filters_and_paging(finished, unique_name: str) -> None:
    api, study = finished
    other = submit(api, **synthetic(unique_name, workload="synthetic", n_trials=1))
    wait_for(api, other["id"])
    everything = api.get("/api/v1/studies", params={"limit": 1000}).json()
    assert everything["total"] >= 2
    ids = [s["id"] for s in everything["items"]]
    assert ids == sorted(ids, reverse=True), "newest first"
    completed = api.get("/api/v1/studies", params={"status": "completed", "limit": 1000}).json()
    assert all(s["status"] == "completed" for s in completed["items"])
    two = api.get(
        "/api/v1/studies", params=[("status", "completed"), ("status", "cancelled")]
    ).json()
    assert two["total"] >= completed["total"]
    mine = api.get("/api/v1/studies", params={"owner": study["owner"]}).json()
    assert mine["total"] >= 2
    assert api.get("/api/v1/studies", params={"owner": "nobody-at-all"}).json() == {
        "items": [],
        "total": 0,
    }
    by_workload = api.get(
        "/api/v1/studies", params={"workload": "digits-cnn", "limit": 1000}
    ).json()
    assert all(s["workload"] == "digits-cnn" for s in by_workload["items"])
    first = api.get("/api/v1/studies", params={"limit": 1}).json()
    second = api.get("/api/v1/studies", params={"limit": 1, "offset": 1}).json()
    assert first["items"][0]["id"] != second["items"][0]["id"]
    assert first["total"] == second["total"] == everything["total"]


def test_workloads_and_optimizers(local_api) -> None:
    workloads = {w["name"]: w for w in local_api.get("/api/v1/workloads").json()}
    assert {"digits-cnn", "synthetic"} <= set(workloads)
    digits = workloads["digits-cnn"]
    assert digits["metric"] == "val_accuracy"
    assert digits["direction"] == "maximize"
    assert digits["args"]["epochs"]["default"] == 8
    assert set(digits["default_space"]["adamp"]) >= {"lr", "delta", "wd_ratio"}
    optimizers = {o["name"]: o for o in local_api.get("/api/v1/optimizers").json()}
    assert set(optimizers) == {"adamp", "sgdp", "adamw", "sgd"}
    assert optimizers["adamp"]["knobs"]["delta"]["default"] == 0.1
    assert optimizers["adamp"]["knobs"]["wd_ratio"]["range"] == "a number in [0, 1]"


@pytest.mark.ray
def test_cluster_shows_both_nodes_and_their_gpus(sqlite_api) -> None:
    cluster = sqlite_api.get("/api/v1/cluster").json()
    alive = [n for n in cluster["nodes"] if n["alive"]]
    assert len(alive) == 2
    assert sum(n["is_head"] for n in alive) == 1
    assert cluster["gpus_total"] == 2
    assert cluster["cpus_total"] == 4
    assert 0 <= cluster["gpus_in_use"] <= cluster["gpus_total"]
    assert cluster["queue_depth"] >= 0


def test_health_metrics_and_docs(local_api) -> None:
    health = local_api.get("/healthz").json()
    assert health == {
        **health,
        "status": "ok",
        "database": True,
        "ray": True,
        "scheduler": "leader",
    }
    metrics = local_api.get("/metrics").text
    assert "adamp_tune_trials_finished_total" in metrics
    assert "adamp_tune_scheduler_leader 1.0" in metrics
    assert local_api.get("/docs").status_code == 200
    schema = local_api.get("/openapi.json").json()
    assert "/api/v1/studies" in schema["paths"]
    assert schema["components"]["schemas"]["StudyCreate"]["examples"]


# Valid by construction: lr in (0, 10], delta >= 0, wd_ratio in [0, 1].
dimension = st.tuples(st.floats(1e-6, 0.5), st.floats(1.01, 19.0), st.booleans()).map(
    lambda t: {"low": t[0], "high": t[0] * t[1], "log": t[2]}
)
spaces = st.fixed_dictionaries(
    {"lr": dimension},
    optional={
        "delta": st.tuples(st.floats(0.0, 5.0), st.floats(0.01, 5.0)).map(
            lambda t: {"low": t[0], "high": t[0] + t[1]}
        ),
        "wd_ratio": st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5, unique=True).map(
            lambda c: {"choices": c}
        ),
        "nesterov": st.just({"choices": [True, False]}),
    },
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(space=spaces)
def test_any_valid_search_space_round_trips(local_api, space: dict[str, Any]) -> None:
    name = f"roundtrip-{abs(hash(repr(space)))}"
    answer = local_api.post(
        "/api/v1/studies",
        json=synthetic(name, search_space=space, n_trials=1, fixed={"steps": 1}),
    )
    if answer.status_code == 409:  # the same example drawn twice
        return
    assert answer.status_code == 201, answer.text
    stored = local_api.get(f"/api/v1/studies/{answer.json()['id']}").json()["search_space"]
    for knob, dim in space.items():
        for key, value in dim.items():
            assert stored[knob][key] == (value if key == "choices" else pytest.approx(value))
