"""Every kind of bad request is answered 4xx naming the offending field, never 500.

Against the real running service: what a client sends is exactly what these tests send.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.studies import submit, synthetic, wait_for

GOOD: dict[str, Any] = {
    "workload": "synthetic",
    "optimizer": "adamp",
    "search_space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}},
    "fixed": {"steps": 1},
    "n_trials": 1,
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the field at dotted ``path`` set to ``value`` (``...`` removes it)."""
    body: dict[str, Any] = {
        **GOOD,
        "search_space": dict(GOOD["search_space"]),
        "fixed": dict(GOOD["fixed"]),
    }
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


CASES = [
    # (description, dotted path to change, new value, field the answer must name)
    ("no name", "name", ..., "name"),
    ("empty name", "name", "", "name"),
    ("name too long", "name", "x" * 129, "name"),
    ("name with a newline", "name", "a\nb", "name"),
    ("no workload", "workload", ..., "workload"),
    ("unknown workload", "workload", "resnet-9000", "workload"),
    ("unknown optimizer", "optimizer", "lion", "optimizer"),
    ("low above high", "search_space.lr", {"low": 0.1, "high": 0.01}, "search_space.lr"),
    ("low equals high", "search_space.lr", {"low": 0.1, "high": 0.1}, "search_space.lr"),
    (
        "log range through zero",
        "search_space.lr",
        {"low": -1, "high": 1, "log": True},
        "search_space.lr",
    ),
    ("lr of zero", "search_space.lr", {"low": 0, "high": 0.1}, "search_space.lr.low"),
    (
        "wd_ratio above 1",
        "search_space.wd_ratio",
        {"low": 0, "high": 1.5},
        "search_space.wd_ratio.high",
    ),
    ("negative delta", "search_space.delta", {"low": -0.1, "high": 1}, "search_space.delta.low"),
    ("beta1 of 1", "search_space.beta1", {"low": 0.5, "high": 1.0}, "search_space.beta1.high"),
    ("no bounds", "search_space.delta", {"log": True}, "search_space.delta"),
    (
        "bounds and choices",
        "search_space.delta",
        {"low": 0, "high": 1, "choices": [0.1]},
        "search_space.delta",
    ),
    ("empty choices", "search_space.delta", {"choices": []}, "search_space.delta.choices"),
    (
        "bad choice",
        "search_space.wd_ratio",
        {"choices": [0.1, 2.0]},
        "search_space.wd_ratio.choices.1",
    ),
    ("range of a boolean", "search_space.nesterov", {"low": 0, "high": 1}, "search_space.nesterov"),
    ("unknown knob", "search_space.momentum", {"low": 0, "high": 0.9}, "search_space.momentum"),
    (
        "non-integer epochs range",
        "search_space.steps",
        {"low": 1.5, "high": 4},
        "search_space.steps.low",
    ),
    ("string bound", "search_space.lr", {"low": "tiny", "high": 0.1}, "search_space.lr.low"),
    (
        "unknown field in range",
        "search_space.lr",
        {"low": 0.1, "high": 1, "scale": 2},
        "search_space.lr.scale",
    ),
    ("fixed unknown", "fixed.epochs", 3, "fixed.epochs"),
    ("fixed out of range", "fixed.steps", 0, "fixed.steps"),
    ("fixed wrong type", "fixed.steps", "ten", "fixed.steps"),
    ("fixed boolean for a number", "fixed.weight_decay", True, "fixed.weight_decay"),
    ("fixed and searched", "fixed.lr", 0.01, "fixed.lr"),
    ("fixed wd_ratio above 1", "fixed.wd_ratio", 2, "fixed.wd_ratio"),
    ("zero trials", "n_trials", 0, "n_trials"),
    ("negative trials", "n_trials", -3, "n_trials"),
    ("absurd trials", "n_trials", 10**9, "n_trials"),
    ("fractional trials", "n_trials", 2.5, "n_trials"),
    ("zero concurrency", "max_concurrent", 0, "max_concurrent"),
    ("negative timeout", "timeout_s", -5, "timeout_s"),
    ("unknown sampler", "sampler", "bayes", "sampler"),
    ("unknown pruner", "pruner", "aggressive", "pruner"),
    ("unknown direction", "direction", "up", "direction"),
    ("negative GPUs", "resources.gpus", -1, "resources.gpus"),
    ("1.5 GPUs", "resources.gpus", 1.5, "resources.gpus"),
    ("zero CPUs", "resources.cpus", 0, "resources.cpus"),
    ("more GPUs than any node", "resources.gpus", 8, "resources.gpus"),
    ("more CPUs than any node", "resources.cpus", 64, "resources.cpus"),
    ("negative seed", "seed", -1, "seed"),
    ("priority too high", "priority", 1000, "priority"),
    ("unknown top-level field", "colour", "blue", "colour"),
    ("search space of the wrong type", "search_space", [1, 2], "search_space"),
]


@pytest.mark.parametrize(("case", "path", "value", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_study_is_refused_naming_the_field(
    local_api: httpx.Client, unique_name: str, case: str, path: str, value: Any, field: str
) -> None:
    body = _with(path, value)
    if path != "name":
        body.setdefault("name", unique_name)
    answer = local_api.post("/api/v1/studies", json=body)
    assert answer.status_code == 422, answer.text
    payload = answer.json()
    named = [".".join(str(p) for p in e["loc"] if p != "body") for e in payload["detail"]]
    assert any(n == field or n.startswith(field + ".") for n in named), (named, payload)
    assert field in payload["message"]
    # Nothing was stored.
    listed = local_api.get("/api/v1/studies", params={"limit": 1000}).json()["items"]
    assert all(s["name"] != body.get("name") for s in listed)


def test_knob_of_another_optimizer_is_refused(local_api: httpx.Client, unique_name: str) -> None:
    body = _with("search_space.delta", {"low": 0.01, "high": 1.0})
    answer = local_api.post(
        "/api/v1/studies", json={**body, "name": unique_name, "optimizer": "adamw"}
    )
    assert answer.status_code == 422
    assert "search_space.delta" in answer.json()["message"]
    assert "adamw" in answer.json()["message"]


def test_grid_needs_discrete_knobs(local_api: httpx.Client, unique_name: str) -> None:
    answer = local_api.post(
        "/api/v1/studies", json={**GOOD, "name": unique_name, "sampler": "grid"}
    )
    assert answer.status_code == 422
    assert "search_space.lr" in answer.json()["message"]
    assert "grid" in answer.json()["message"]


def test_nesterov_without_momentum_is_refused(local_api: httpx.Client, unique_name: str) -> None:
    body = {
        **GOOD,
        "name": unique_name,
        "optimizer": "sgdp",
        "fixed": {"nesterov": True, "momentum": 0.0},
    }
    answer = local_api.post("/api/v1/studies", json=body)
    assert answer.status_code == 422
    assert "nesterov" in answer.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"a string"', b"", b'{"name": null}'],
    ids=["broken", "list", "string", "empty", "null"],
)
def test_malformed_bodies_are_422(local_api: httpx.Client, raw: bytes) -> None:
    answer = local_api.post(
        "/api/v1/studies", content=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"]


def test_duplicate_name_is_409_and_keeps_the_first(
    local_api: httpx.Client, unique_name: str
) -> None:
    first = submit(local_api, **synthetic(unique_name, n_trials=1))
    answer = local_api.post("/api/v1/studies", json=synthetic(unique_name, n_trials=3))
    assert answer.status_code == 409
    assert unique_name in answer.json()["message"]
    done = wait_for(local_api, first["id"])
    assert done["n_trials"] == 1
    assert done["counts"]["complete"] == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/api/v1/studies/999999", 404, None),
        ("GET", "/api/v1/studies/abc", 422, "study_id"),
        ("GET", "/api/v1/studies/999999/trials", 404, None),
        ("GET", "/api/v1/studies/999999/trials/0", 404, None),
        ("GET", "/api/v1/studies/999999/importance", 404, None),
        ("POST", "/api/v1/studies/999999/cancel", 404, None),
        ("GET", "/api/v1/studies?limit=0", 422, "limit"),
        ("GET", "/api/v1/studies?limit=100000", 422, "limit"),
        ("GET", "/api/v1/studies?offset=-1", 422, "offset"),
        ("GET", "/api/v1/studies?status=sleeping", 422, "status"),
        ("GET", "/api/v1/nothing-here", 404, None),
    ],
)
def test_bad_paths_and_queries(
    local_api: httpx.Client, method: str, path: str, status: int, field: str | None
) -> None:
    answer = local_api.request(method, path)
    assert answer.status_code == status, answer.text
    if field is not None:
        assert field in answer.json()["message"]


def test_bad_trial_queries(local_api: httpx.Client, unique_name: str) -> None:
    study = submit(local_api, **synthetic(unique_name, n_trials=1))
    base = f"/api/v1/studies/{study['id']}/trials"
    for params, field in [
        ({"state": "asleep"}, "state"),
        ({"order_by": "colour"}, "order_by"),
        ({"limit": 0}, "limit"),
        ({"offset": -2}, "offset"),
    ]:
        answer = local_api.get(base, params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert field in answer.json()["message"]
    assert local_api.get(f"{base}/12345").status_code == 404
    assert local_api.get(f"{base}/minus-one").status_code == 422


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
study_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=140) | json_values,
        "workload": st.sampled_from(["synthetic", "digits-cnn", "nope"]) | json_values,
        "optimizer": st.sampled_from(["adamp", "sgdp", "adamw", "sgd", "x"]),
        "search_space": st.dictionaries(
            st.sampled_from(["lr", "delta", "wd_ratio", "momentum", "steps", "zz"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "low": json_values,
                    "high": json_values,
                    "log": json_values,
                    "step": json_values,
                    "choices": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "fixed": st.dictionaries(st.sampled_from(["steps", "lr", "epochs", "sleep_s"]), json_values)
        | json_values,
        "n_trials": json_values,
        "resources": st.fixed_dictionaries({}, optional={"gpus": json_values, "cpus": json_values}),
        "timeout_s": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=study_like)
def test_no_request_body_makes_a_500(local_api: httpx.Client, body: dict[str, Any]) -> None:
    # A valid body would start a study: make every generated one refer to no real workload
    # unless the test gives it a name we cancel right away.
    answer = local_api.post("/api/v1/studies", json=body)
    assert answer.status_code < 500, answer.text
    if answer.status_code == 201:
        local_api.post(f"/api/v1/studies/{answer.json()['id']}/cancel")
    else:
        assert answer.status_code in (409, 422), answer.text
        assert answer.json()["message"]
