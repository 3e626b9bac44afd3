"""The API fuzzed by schemathesis against a live service with auth on: no 5xx, every
answer as the OpenAPI schema says, and the results already stored left as they were.

Bounded: a fixed seed (``ADAMP_TUNE_FUZZ_SEED`` to try another), a few examples per
operation and a time budget for the whole run (``ADAMP_TUNE_FUZZ_S``, default 40 s: the
schema's own examples and its boundary values take about 13 s on a quiet 2-core machine,
and every one of the 21 operations is then fuzzed in the rest; set it higher for a longer
hunt). The stored study is made beforehand on the app in this process (a thread cluster);
the fuzzing meets ``adamp-tune serve`` in the embedded default (its own 1-CPU local Ray)
with its scheduler off, so the studies the fuzzer submits stay queued. It needs nothing of
the session's Ray cluster, so it runs beside the tests that do (tests/support/lanes.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.in_process import InProcessService
from tests.support.service_process import ServiceProcess, embedded_env
from tests.support.studies import all_trials, submit, synthetic, wait_for
from tests.support.tokens import make_tokens

pytestmark = pytest.mark.ray

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Every check schemathesis has but one: `positive_data_acceptance` expects every request
# the schema allows to be accepted, and a study's workload and knob names are checked
# against the workloads installed *now* (a registry no static schema can list), so a
# schema-valid body can rightly be a 422 that names the unknown workload.
EXCLUDED_CHECKS = "positive_data_acceptance"


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path
) -> Iterator[dict[str, Any]]:
    """``adamp-tune serve`` with auth required and its scheduler off, on a database holding
    one finished study (run beforehand on the app in this process, on a thread cluster)."""
    folder = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{folder / 'fuzz.db'}"
    tokens = make_tokens(url, {"alice": [], "root": ["--admin"]})
    maker = InProcessService.start(url, folder / "data", auth="required")
    try:
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        with httpx.Client(base_url=maker.url, headers=headers, timeout=30) as alice:
            study = submit(alice, **synthetic("fuzz-kept", n_trials=3, fixed={"steps": 3}))
            study = wait_for(alice, study["id"], timeout_s=120)
            assert study["status"] == "completed"
            kept = all_trials(alice, study["id"])
    finally:
        maker.stop()
    # The fuzzer is a client without think time by design; its job is finding 5xx, not
    # meeting the rate limits (tests/service/test_rate_limits.py), so they are off here.
    service = ServiceProcess.start(
        url,
        embedded_env(),
        artifacts_dir / "service-fuzz.log",
        auth="required",
        rate_limit_per_s="0",
        heavy_reads_per_s="0",
        scheduler="false",
        ray_num_cpus="1",
    )
    try:
        yield {"service": service, "tokens": tokens, "study": study, "trials": kept}
    finally:
        service.stop()


def test_the_fuzzer_finds_no_5xx_and_no_answer_off_the_schema(
    target: dict[str, Any], tmp_path: Path, artifacts_dir: Path
) -> None:
    service: ServiceProcess = target["service"]
    report = artifacts_dir / "schemathesis.txt"
    command = [
        SCHEMATHESIS,
        "run",
        f"{service.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {target['tokens']['alice']}",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "10",
        "--max-time",
        os.environ.get("ADAMP_TUNE_FUZZ_S", "40"),
        "--seed",
        os.environ.get("ADAMP_TUNE_FUZZ_SEED", "0"),
        "--workers",
        "2",
        "--no-color",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report.write_text(run.stdout + run.stderr)
    assert run.returncode == 0, f"schemathesis found failures (see {report}):\n{run.stdout[-6000:]}"
    assert "generated" in run.stdout, run.stdout[-2000:]

    headers = {"Authorization": f"Bearer {target['tokens']['root']}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as root:
        assert root.get("/healthz").status_code == 200, "the service survived it"
        study = root.get(f"/api/v1/studies/{target['study']['id']}").json()
        assert study["status"] == "completed"
        assert study["counts"] == target["study"]["counts"]
        assert study["best_trial"] == target["study"]["best_trial"]
        assert all_trials(root, study["id"]) == target["trials"], "stored results unchanged"
