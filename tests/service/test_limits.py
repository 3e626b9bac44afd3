"""One user cannot stall everyone: grids bounded before anything is stored, studies per
user limited, priorities capped, against the session's auth-required service."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.comparisons import comparison_body
from tests.support.in_process import InProcessService
from tests.support.studies import synthetic
from tests.support.tokens import cli


@pytest.fixture
def users(secured: tuple[InProcessService, dict[str, str]]) -> Iterator[dict[str, httpx.Client]]:
    service, tokens = secured
    clients = {
        name: httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        for name, token in tokens.items()
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def _grid(name: str, space: dict[str, Any]) -> dict[str, Any]:
    return synthetic(name, sampler="grid", search_space=space, n_trials=10)


@pytest.mark.parametrize(
    ("space", "field"),
    [
        # A 200-byte body once asked for ten million grid points; the scheduler froze.
        ({"wd_ratio": {"low": 0, "high": 1, "step": 1e-7}}, "search_space.wd_ratio.step"),
        ({"wd_ratio": {"low": 0, "high": 1, "step": 5e-324}}, "search_space.wd_ratio.step"),
        (
            {
                "lr": {"choices": [i / 1000 + 1e-4 for i in range(216)]},
                "delta": {"choices": [i / 1000 + 1e-3 for i in range(216)]},
                "wd_ratio": {"choices": [i / 1000 for i in range(216)]},
            },
            "search_space.lr",
        ),
    ],
)
def test_a_grid_too_large_is_refused_before_it_is_stored(
    users: dict[str, httpx.Client], space: dict[str, Any], field: str
) -> None:
    alice = users["alice"]
    started = time.monotonic()
    answer = alice.post("/api/v1/studies", json=_grid(f"grid-{field}-{len(space)}", space))
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"].startswith(field), answer.text
    assert time.monotonic() - started < 5
    listed = alice.get("/api/v1/studies", params={"limit": 1000}).json()["items"]
    assert not [s for s in listed if s["name"].startswith("grid-")], "nothing was stored"
    if len(space) == 3:
        assert "ADAMP_TUNE_MAX_GRID_POINTS" in answer.json()["message"]


def test_a_grid_within_the_limit_is_searched_point_by_point(
    users: dict[str, httpx.Client],
) -> None:
    alice = users["alice"]
    space = {"wd_ratio": {"low": 0, "high": 1, "step": 0.25}, "nesterov": {"choices": [True]}}
    made = alice.post("/api/v1/studies", json=_grid("grid-small", space))
    assert made.status_code == 201, made.text
    study_id = made.json()["id"]
    deadline = time.monotonic() + 120
    while (study := alice.get(f"/api/v1/studies/{study_id}").json())["status"] != "completed":
        assert time.monotonic() < deadline, study
        time.sleep(0.3)
    trials = alice.get(f"/api/v1/studies/{study_id}/trials").json()["items"]
    assert sorted(t["params"]["wd_ratio"] for t in trials) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_priorities_are_capped_for_users_not_for_admins(
    secured, users: dict[str, httpx.Client]
) -> None:
    service, _ = secured
    alice, root = users["alice"], users["root"]
    too_high = alice.post("/api/v1/studies", json=synthetic("prio-high", priority=100))
    assert too_high.status_code == 403
    assert "cap (0)" in too_high.json()["message"]
    low = alice.post("/api/v1/studies", json=synthetic("prio-low", priority=-5, n_trials=1))
    assert low.status_code == 201, "lowering one's own priority is always allowed"
    raised = alice.patch(f"/api/v1/studies/{low.json()['id']}", json={"priority": 50})
    assert raised.status_code == 403, raised.text
    assert root.post("/api/v1/studies", json=synthetic("prio-admin", priority=100)).status_code == (
        201
    )
    env = {**os.environ, "ADAMP_TUNE_DATABASE_URL": service.database_url}
    given = cli(env, "user", "limits", "alice", "--max-priority", "10")
    assert given.returncode == 0, given.stderr
    assert "highest priority 10" in given.stdout
    assert alice.post("/api/v1/studies", json=synthetic("prio-10", priority=10)).status_code == (
        201
    )
    assert alice.post("/api/v1/studies", json=synthetic("prio-11", priority=11)).status_code == (
        403
    )
    cli(env, "user", "limits", "alice", "--max-priority", "default")


def test_a_user_queues_at_most_their_limit_of_studies(
    secured, users: dict[str, httpx.Client]
) -> None:
    service, _ = secured
    env = {**os.environ, "ADAMP_TUNE_DATABASE_URL": service.database_url}
    assert cli(env, "user", "limits", "bob", "--studies", "2").returncode == 0
    bob, alice = users["bob"], users["alice"]
    long = {"steps": 10_000, "sleep_s": 0.05}
    made = [
        bob.post("/api/v1/studies", json=synthetic(f"bob-quota-{i}", n_trials=1, fixed=long))
        for i in range(2)
    ]
    assert [m.status_code for m in made] == [201, 201]
    third = bob.post("/api/v1/studies", json=synthetic("bob-quota-2", n_trials=1, fixed=long))
    assert third.status_code == 429
    assert "(2)" in third.json()["message"]
    assert "adamp-tune user limits" in third.json()["message"]
    others = alice.post("/api/v1/studies", json=synthetic("alice-not-blocked", n_trials=1))
    assert others.status_code == 201, "another user is not held back"
    assert bob.post(f"/api/v1/studies/{made[0].json()['id']}/cancel").status_code == 200
    # A comparison's studies count too: one queued plus its two would pass the limit.
    comparison = bob.post("/api/v1/comparisons", json=comparison_body("bob-quota-comparison"))
    assert comparison.status_code == 429, comparison.text
    assert "asks for 2 more at once" in comparison.json()["message"]
    again = bob.post("/api/v1/studies", json=synthetic("bob-quota-2", n_trials=1, fixed=long))
    assert again.status_code == 201, again.text
    for study in (made[1].json(), again.json()):
        bob.post(f"/api/v1/studies/{study['id']}/cancel")
    cli(env, "user", "limits", "bob", "--studies", "default")


def test_large_pages_of_a_running_study_are_shared_by_readers(
    users: dict[str, httpx.Client],
) -> None:
    """Many readers of the same large page of a running study get one computation of it
    (marked with its age), not one each; small pages and finished studies stay exact."""
    alice = users["alice"]
    body = synthetic(
        "shared-pages", n_trials=2, max_concurrent=2, fixed={"steps": 200, "sleep_s": 0.1}
    )
    study = alice.post("/api/v1/studies", json=body).json()
    deadline = time.monotonic() + 60
    while alice.get(f"/api/v1/studies/{study['id']}").json()["counts"]["running"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    path = f"/api/v1/studies/{study['id']}/trials"
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: alice.get(path, params={"limit": 1000}), range(8)))
    assert all(p.status_code == 200 for p in pages)
    shared = [p for p in pages if "x-stale-age" in p.headers]
    assert len(shared) >= 6, "readers asking together share one computation"
    assert all(float(p.headers["x-stale-age"]) < 5 for p in shared)
    assert all(p.json()["total"] == 2 for p in pages)
    small = alice.get(path, params={"limit": 100})
    assert "x-stale-age" not in small.headers
    alice.post(f"/api/v1/studies/{study['id']}/cancel")
