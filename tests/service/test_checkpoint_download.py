"""Downloading a trial's checkpoint: the owner can (API, CLI, the dashboard's link), nobody
else can, and a trial without one gets a 404 that says why."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from tests.support.service_process import ServiceProcess
from tests.support.studies import submit, synthetic, wait_for

pytestmark = pytest.mark.ray

CLI = str(Path(sys.executable).with_name("adamp-tune"))


def _as(service: ServiceProcess, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=service.url, headers=headers, timeout=30)


def test_the_owner_downloads_the_best_trials_checkpoint(
    secured: tuple[ServiceProcess, dict[str, str]], tmp_path: Path, unique_name: str
) -> None:
    service, tokens = secured
    with _as(service, tokens["alice"]) as alice:
        study = submit(
            alice, **synthetic(unique_name, n_trials=2, fixed={"steps": 3, "sleep_s": 0.01})
        )
        done = wait_for(alice, study["id"])
        best = done["best_trial"]["number"]
        route = f"/api/v1/studies/{study['id']}/trials/{best}/checkpoint"

        answer = alice.get(route)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/octet-stream"
        assert f"trial-{best}.pt" in answer.headers["content-disposition"]
        saved = torch.load(io.BytesIO(answer.content), weights_only=True)
        assert saved["step"] == 2, "the checkpoint of the last of 3 steps"
        assert set(saved["state"]) == {"rng", "value"}

        link = alice.get(f"/dashboard-api/studies/{study['id']}/best").json()
        assert link["checkpoint"] == route, "the dashboard links the best trial's checkpoint"

        missing = alice.get(f"/api/v1/studies/{study['id']}/trials/99/checkpoint")
        assert missing.status_code == 404
        assert "has no trial 99" in missing.json()["message"]

    with _as(service, tokens["bob"]) as bob:
        refused = bob.get(route)
        assert refused.status_code == 403
        assert "belongs to alice" in refused.json()["message"]
    with _as(service, tokens["root"]) as root:
        assert root.get(route).status_code == 200, "an admin may"
    with _as(service, None) as anonymous:
        assert anonymous.get(route).status_code == 401

    out = tmp_path / "model.pt"
    fetched = subprocess.run(
        [CLI, "checkpoint", str(study["id"]), str(best), "-o", str(out), "--url", service.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "ADAMP_TUNE_TOKEN": tokens["alice"]},
    )
    assert fetched.returncode == 0, fetched.stderr + fetched.stdout
    assert out.read_bytes() == answer.content
    assert "bytes written to" in fetched.stdout
    denied = subprocess.run(
        [CLI, "checkpoint", str(study["id"]), str(best), "-o", str(tmp_path / "b.pt")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "ADAMP_TUNE_URL": service.url,
            "ADAMP_TUNE_TOKEN": tokens["bob"],
        },
    )
    assert denied.returncode == 1
    assert "belongs to alice" in denied.stderr
    assert not (tmp_path / "b.pt").exists(), "a refused download leaves no file"
    assert not list(tmp_path.glob(".*.part"))
