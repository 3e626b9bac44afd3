"""Submitting comparisons and waiting on them through the public API."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.studies import FINAL


def comparison_body(name: str, **overrides: Any) -> dict[str, Any]:
    """A tiny comparison of AdamP and AdamW on the synthetic workload."""
    body: dict[str, Any] = {
        "name": name,
        "workload": "synthetic",
        "optimizers": ["adamp", "adamw"],
        "n_trials": 3,
        "seeds": 3,
        "max_concurrent": 2,
        "sampler": "random",
        "pruner": "none",
        "seed": 7,
        "fixed": {"steps": 2, "noise": 0.05},
    }
    body.update(overrides)
    return body


def submit_comparison(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/api/v1/comparisons", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def wait_comparison(
    api: httpx.Client,
    comparison_id: int,
    predicate: Any = None,
    timeout_s: float = 120,
    what: str = "the comparison to end",
) -> dict[str, Any]:
    """Poll until ``predicate(comparison)`` (default: it ended); returns it."""
    predicate = predicate or (lambda c: c["status"] in FINAL)
    deadline = time.monotonic() + timeout_s
    while True:
        answer = api.get(f"/api/v1/comparisons/{comparison_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        if predicate(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {found}")
        time.sleep(0.25)
