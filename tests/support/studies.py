"""Submitting studies and waiting on them through the public API."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = ("completed", "failed", "cancelled")


def created(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to ``path``; fails the test with the server's message unless ``201``."""
    answer = api.post(path, json=body)
    assert answer.status_code == 201, answer.text
    found: dict[str, Any] = answer.json()
    return found


def fetched(api: httpx.Client, path: str) -> dict[str, Any]:
    """GET ``path``; fails the test with the server's message unless ``200``."""
    answer = api.get(path)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def poll(
    api: httpx.Client, path: str, predicate: Any, timeout_s: float, what: str
) -> dict[str, Any]:
    """GET ``path`` every 0.25 s until ``predicate(answer)``; returns that answer."""
    deadline = time.monotonic() + timeout_s
    found = fetched(api, path)
    while not predicate(found):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {found}")
        time.sleep(0.25)
        found = fetched(api, path)
    return found


def submit(api: httpx.Client, **body: Any) -> dict[str, Any]:
    """POST a study; fails the test with the server's message if it is refused."""
    return created(api, "/api/v1/studies", body)


def get_study(api: httpx.Client, study_id: int) -> dict[str, Any]:
    return fetched(api, f"/api/v1/studies/{study_id}")


def wait_for(
    api: httpx.Client,
    study_id: int,
    predicate: Any = None,
    timeout_s: float = 180,
    what: str = "the study to end",
) -> dict[str, Any]:
    """Poll the study until ``predicate(study)`` (default: it ended); returns it."""
    predicate = predicate or (lambda s: s["status"] in FINAL)
    return poll(api, f"/api/v1/studies/{study_id}", predicate, timeout_s, what)


def all_trials(api: httpx.Client, study_id: int, **params: Any) -> list[dict[str, Any]]:
    """Every trial of a study (paging through the list endpoint).

    Pages of 200, as a polite client asks: a larger page counts as a heavy read against
    the service's rate limits, and tests poll this in loops."""
    items: list[dict[str, Any]] = []
    while True:
        answer = api.get(
            f"/api/v1/studies/{study_id}/trials",
            params={"limit": 200, "offset": len(items), **params},
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
