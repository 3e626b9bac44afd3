"""Submitting comparisons and waiting on them through the public API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.studies import FINAL, created, poll


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
    """POST a comparison; fails the test with the server's message if it is refused."""
    return created(api, "/api/v1/comparisons", body)


def wait_comparison(
    api: httpx.Client,
    comparison_id: int,
    predicate: Any = None,
    timeout_s: float = 120,
    what: str = "the comparison to end",
) -> dict[str, Any]:
    """Poll until ``predicate(comparison)`` (default: it ended); returns it."""
    predicate = predicate or (lambda c: c["status"] in FINAL)
    return poll(api, f"/api/v1/comparisons/{comparison_id}", predicate, timeout_s, what)
