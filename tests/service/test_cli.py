"""The ``adamp-tune`` command as a user runs it, against the running service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.service_process import ServiceProcess
from tests.support.studies import submit, synthetic, wait_for

pytestmark = pytest.mark.ray

CLI = str(Path(sys.executable).with_name("adamp-tune"))


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb"},
    )


def test_submit_wait_list_show_best(
    sqlite_service: ServiceProcess, tmp_path: Path, unique_name: str
) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(
        yaml.safe_dump(
            synthetic(
                unique_name,
                n_trials=4,
                search_space={
                    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                    "wd_ratio": {"low": 0, "high": 1},
                },
                fixed={"steps": 3, "weight_decay": 0.01},
            )
        )
    )
    url = ["--url", sqlite_service.url]
    submitted = run("submit", str(spec), "--wait", *url)
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    assert "submitted study" in submitted.stdout
    assert "completed: 4 complete" in submitted.stdout
    study_id = submitted.stdout.split("submitted study ")[1].split()[0]

    listed = run("studies", *url)
    assert listed.returncode == 0
    assert unique_name[:20] in listed.stdout

    shown = run("show", study_id, *url)
    assert shown.returncode == 0
    assert '"status": "completed"' in shown.stdout

    best = run("best", study_id, *url)
    assert best.returncode == 0, best.stderr
    snippet = best.stdout[best.stdout.index("from adamp") :]
    assert "optimizer = AdamP(params, lr=" in snippet
    assert "weight_decay=0.01" in snippet
    assert "steps" not in snippet
    scope = {"params": [torch.nn.Parameter(torch.zeros(3, 3))]}
    exec(snippet, scope)
    assert scope["optimizer"].param_groups[0]["weight_decay"] == 0.01


def test_cancel_from_the_command_line(
    sqlite_service: ServiceProcess, sqlite_api, unique_name: str
) -> None:
    study = submit(
        sqlite_api, **synthetic(unique_name, n_trials=2, fixed={"steps": 500, "sleep_s": 0.05})
    )
    done = run("cancel", str(study["id"]), "--url", sqlite_service.url)
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    assert wait_for(sqlite_api, study["id"])["status"] == "cancelled"


def test_errors_are_one_clear_line(
    sqlite_service: ServiceProcess, tmp_path: Path, unique_name: str
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(synthetic(unique_name, n_trials=0)))
    bad = run("submit", str(spec), "--url", sqlite_service.url)
    assert bad.returncode == 1
    assert "n_trials" in bad.stderr
    assert "Traceback" not in bad.stderr

    missing = run("show", "987654", "--url", sqlite_service.url)
    assert missing.returncode == 1
    assert "no study with id 987654" in missing.stderr

    unreachable = run("studies", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert "cannot reach the service" in unreachable.stderr

    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("name: [unclosed")
    unreadable = run("submit", str(garbled), "--url", sqlite_service.url)
    assert unreadable.returncode == 2
    assert "cannot read" in unreadable.stderr


def test_compare_waits_and_prints_the_report_as_tables(
    sqlite_service: ServiceProcess, tmp_path: Path, unique_name: str
) -> None:
    from tests.support.comparisons import comparison_body  # noqa: PLC0415

    spec = tmp_path / "compare.yaml"
    spec.write_text(yaml.safe_dump(comparison_body(unique_name, n_trials=2, seeds=2)))
    compared = run("compare", str(spec), "--wait", "--url", sqlite_service.url)
    assert compared.returncode == 0, compared.stderr + compared.stdout
    out = compared.stdout
    assert "submitted comparison" in out
    assert "completed (done)" in out
    for header in ("best tuned", "eval mean", "eval 95% CI", "difference", "paired t-test"):
        assert header in out, header
    assert "adamp - adamw" in out
    assert "AdamP vs AdamW" in out or "beats" in out, "the verdict sentence"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(comparison_body(unique_name, optimizers=["adamp"])))
    refused = run("compare", str(bad), "--url", sqlite_service.url)
    assert refused.returncode == 1
    assert "optimizers" in refused.stderr
