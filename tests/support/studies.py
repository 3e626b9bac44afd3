"""Submitting studies and waiting on them through the public API."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = ("completed", "failed", "cancelled")


def submit(api: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST a study; fails the test with the server's message if it is refused."""
    answer = api.post("/api/v1/studies", json=body)
    assert answer.status_code == 201, answer.text
    study: dict[str, Any] = answer.json()
    return study


def get_study(api: httpx.Client, study_id: int) -> dict[str, Any]:
    answer = api.get(f"/api/v1/studies/{study_id}")
    assert answer.status_code == 200, answer.text
    study: dict[str, Any] = answer.json()
    return study


def wait_for(
    api: httpx.Client,
    study_id: int,
    predicate: Any = None,
    timeout_s: float = 180,
    what: str = "the study to end",
) -> dict[str, Any]:
    """Poll the study until ``predicate(study)`` (default: it ended); returns it."""
    predicate = predicate or (lambda s: s["status"] in FINAL)
    deadline = time.monotonic() + timeout_s
    study = get_study(api, study_id)
    while not predicate(study):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {study}")
        time.sleep(0.25)
        study = get_study(api, study_id)
    return study


def all_trials(api: httpx.Client, study_id: int, **params: Any) -> list[dict[str, Any]]:
    """Every trial of a study (paging through the list endpoint)."""
    items: list[dict[str, Any]] = []
    while True:
        answer = api.get(
            f"/api/v1/studies/{study_id}/trials",
            params={"limit": 1000, "offset": len(items), **params},
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def synthetic(name: str, **overrides: Any) -> dict[str, Any]:
    """A cheap study of the synthetic workload (override any field)."""
    body: dict[str, Any] = {
        "name": name,
        "workload": "synthetic",
        "optimizer": "adamp",
        "n_trials": 4,
        "max_concurrent": 2,
        "sampler": "random",
        "pruner": "none",
        "seed": 1,
        "fixed": {"steps": 3},
    }
    body.update(overrides)
    return body
