"""Comparisons end to end on the real service and Ray cluster, with the synthetic workload:
equal budgets, evaluation on fresh seeds, the report's numbers, ownership, cancel, and a
restart in the middle."""

from __future__ import annotations

import statistics
from pathlib import Path

import httpx
import pytest
from scipy import stats as scipy_stats

from tests.support.comparisons import comparison_body, submit_comparison, wait_comparison
from tests.support.in_process import InProcessService
from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, get_study, wait_for

pytestmark = pytest.mark.ray


def test_a_comparison_tunes_with_equal_budgets_then_evaluates_on_fresh_seeds(
    local_api: httpx.Client, unique_name: str
) -> None:
    created = submit_comparison(
        local_api, **comparison_body(unique_name, optimizers=["adamp", "adamw", "sgdp", "sgd"])
    )
    assert created["status"] == "queued"
    tuning = {s["optimizer"]: get_study(local_api, s["study_id"]) for s in created["studies"]}
    assert set(tuning) == {"adamp", "adamw", "sgdp", "sgd"}
    for study in tuning.values():
        assert study["owner"] == created["owner"]
        assert (study["n_trials"], study["sampler"], study["pruner"], study["seed"]) == (
            3,
            "random",
            "none",
            7,
        )
        assert study["fixed"] == {"steps": 2, "noise": 0.05}
    # Shared knobs over the same range within each pair; the projection's knobs in addition.
    assert tuning["adamp"]["search_space"]["lr"] == tuning["adamw"]["search_space"]["lr"]
    assert tuning["sgdp"]["search_space"]["lr"] == tuning["sgd"]["search_space"]["lr"]
    assert set(tuning["adamp"]["search_space"]) == {"lr", "delta", "wd_ratio"}
    assert set(tuning["adamw"]["search_space"]) == {"lr"}

    done = wait_comparison(local_api, created["id"])
    assert done["status"] == "completed", done
    assert done["phase"] == "done"
    evals = {s["optimizer"]: s for s in done["studies"] if s["role"] == "eval"}
    report = done["report"]
    assert report["final"]
    by_name = {o["optimizer"]: o for o in report["optimizers"]}
    seed_lists = []
    for name, part in evals.items():
        assert part["status"] == "completed"
        trials = all_trials(local_api, part["study_id"])
        assert len(trials) == 3
        best = get_study(local_api, tuning[name]["id"])["best_trial"]
        # Every evaluation trial re-trains the tuned best configuration.
        assert all(t["params"] == best["params"] for t in trials)
        out = by_name[name]
        assert out["best_tuned_value"] == pytest.approx(best["value"])
        ev = out["evaluation"]
        seeds = ev["seeds"]
        assert len(set(seeds)) == 3, "each evaluation trial has a seed of its own"
        seed_lists.append(seeds)
        recorded = sorted(t["value"] for t in trials)
        assert sorted(ev["values"]) == pytest.approx(recorded)
        assert ev["mean"] == pytest.approx(statistics.fmean(recorded))
        assert ev["std"] == pytest.approx(float(scipy_stats.tstd(recorded)))
        low, high = scipy_stats.t.interval(0.95, 2, loc=ev["mean"], scale=scipy_stats.sem(recorded))
        assert ev["ci95"] == pytest.approx([low, high])
        assert len(out["best_so_far"]) == 3
    # The same seeds for every optimizer, so differences are paired by seed.
    assert all(sorted(s) == sorted(seed_lists[0]) for s in seed_lists)
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert set(pairs) == {("adamp", "adamw"), ("sgdp", "sgd")}
    for (a, b), pair in pairs.items():
        assert pair["test"].startswith("paired t-test")
        mean_a = by_name[a]["evaluation"]["mean"]
        mean_b = by_name[b]["evaluation"]["mean"]
        assert pair["difference"] == pytest.approx(mean_a - mean_b)
        assert pair["verdict"] in report["verdict"]
        assert set(pair["trials_to_reach_other_best"]) == {a, b}

    listed = local_api.get("/api/v1/comparisons", params={"status": "completed"}).json()
    assert created["id"] in [c["id"] for c in listed["items"]]


def test_bad_comparisons_are_refused_naming_the_field(
    local_api: httpx.Client, unique_name: str
) -> None:
    cases = [
        ({"optimizers": ["adamp"]}, "optimizers"),
        ({"optimizers": ["adamp", "adamp"]}, "optimizers"),
        ({"optimizers": ["adamp", "lion"]}, "optimizers"),
        ({"seeds": 1}, "seeds"),
        ({"seeds": 10_000}, "seeds"),
        ({"n_trials": 10**6}, "n_trials"),
        ({"search_space": {"lr": {"low": 0, "high": 1}}}, "search_space.lr.low"),
        ({"search_space": {"momentum": {"low": 0.1, "high": 0.9}}}, "search_space.momentum"),
        ({"fixed": {"nope": 1}}, "fixed.nope"),
        ({"name": "x" * 101}, "name"),
    ]
    for change, field in cases:
        answer = local_api.post(
            "/api/v1/comparisons", json={**comparison_body(unique_name), **change}
        )
        assert answer.status_code == 422, (change, answer.text)
        assert answer.json()["message"].startswith(field), (change, answer.json()["message"])
    assert local_api.get("/api/v1/comparisons/999999").status_code == 404
    assert local_api.get("/api/v1/comparisons/0").status_code == 422
    first = submit_comparison(local_api, **comparison_body(unique_name, n_trials=1, seeds=2))
    again = local_api.post("/api/v1/comparisons", json=comparison_body(unique_name))
    assert again.status_code == 409
    wait_comparison(local_api, first["id"])


def test_comparisons_are_owned_like_studies_and_cancel_stops_every_part(
    secured: tuple[InProcessService, dict[str, str]], unique_name: str
) -> None:
    service, tokens = secured
    with (
        httpx.Client(base_url=service.url, timeout=30) as anonymous,
        httpx.Client(
            base_url=service.url, timeout=30, headers={"Authorization": f"Bearer {tokens['alice']}"}
        ) as alice,
        httpx.Client(
            base_url=service.url, timeout=30, headers={"Authorization": f"Bearer {tokens['bob']}"}
        ) as bob,
    ):
        body = comparison_body(unique_name, fixed={"steps": 100, "sleep_s": 0.1})
        assert anonymous.post("/api/v1/comparisons", json=body).status_code == 401
        assert anonymous.get("/api/v1/comparisons").status_code == 401
        # Priority above the user's cap (the service's default cap is 0): refused, as a study.
        assert alice.post("/api/v1/comparisons", json={**body, "priority": 5}).status_code == 403
        created = submit_comparison(alice, **body)
        assert created["owner"] == "alice"
        for part in created["studies"]:
            assert get_study(alice, part["study_id"])["owner"] == "alice"
        wait_comparison(
            alice,
            created["id"],
            lambda c: sum(s["counts"]["running"] for s in c["studies"]) >= 1,
            60,
            "a running trial",
        )
        refused = bob.post(f"/api/v1/comparisons/{created['id']}/cancel")
        assert refused.status_code == 403
        assert "alice" in refused.json()["message"]
        assert bob.get(f"/api/v1/comparisons/{created['id']}").status_code == 200
        cancelled = alice.post(f"/api/v1/comparisons/{created['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        for part in created["studies"]:
            study = wait_for(
                alice, part["study_id"], lambda s: s["counts"]["running"] == 0, 30, "trials to stop"
            )
            assert study["status"] == "cancelled"
        again = alice.post(f"/api/v1/comparisons/{created['id']}/cancel")
        assert again.status_code == 409
        # No evaluation study appears after the cancel.
        final = alice.get(f"/api/v1/comparisons/{created['id']}").json()
        assert {s["role"] for s in final["studies"]} == {"tune"}


def test_a_restarted_service_resumes_a_comparison(
    ray_cluster: RayCluster, tmp_path: Path, artifacts_dir: Path, unique_name: str
) -> None:
    env = dict(ray_cluster.env, RAY_ADDRESS=ray_cluster.address)
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    service = ServiceProcess.start(
        url, env, artifacts_dir / "service-comparison-restart.log", scheduler_lease_s="3"
    )
    try:
        body = comparison_body(unique_name, n_trials=2, seeds=2, fixed={"steps": 8, "sleep_s": 0.1})
        with httpx.Client(base_url=service.url, timeout=30) as api:
            created = submit_comparison(api, **body)
            wait_comparison(
                api,
                created["id"],
                lambda c: sum(s["counts"]["complete"] for s in c["studies"]) >= 1,
                60,
                "a complete tuning trial",
            )
        service.kill()  # no clean shutdown: the next process finds what this one left
        service.launch()  # the same database
        with httpx.Client(base_url=service.url, timeout=30) as api:
            done = wait_comparison(api, created["id"], timeout_s=120)
        assert done["status"] == "completed", done
        roles = sorted((s["optimizer"], s["role"]) for s in done["studies"])
        assert roles == [("adamp", "eval"), ("adamp", "tune"), ("adamw", "eval"), ("adamw", "tune")]
        for part in done["studies"]:
            assert part["counts"]["complete"] == (2 if part["role"] in ("tune", "eval") else 0)
        assert done["report"]["final"]
    finally:
        service.stop()
