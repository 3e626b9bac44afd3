"""The embedded default, as ``make run`` starts it: no database URL, no Ray address, no setup.

SQLite under the data directory and a local Ray started in-process; SIGTERM stops it cleanly
with nothing left running, and a restart finds everything where it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, submit, synthetic, wait_for

pytestmark = pytest.mark.ray


def test_serve_with_no_configuration(tmp_path: Path, artifacts_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ADAMP_TUNE_"))}
    env["ADAMP_TUNE_DATA_DIR"] = str(tmp_path / "data")
    env["ADAMP_TUNE_RAY_NUM_CPUS"] = "2"
    log = artifacts_dir / "service-embedded.log"
    log.write_bytes(b"")
    service = ServiceProcess("", env, log)
    service.launch()
    try:
        with httpx.Client(base_url=service.url, timeout=30) as api:
            health = api.get("/healthz").json()
            assert health["status"] == "ok"
            assert health["scheduler"] == "leader"
            nodes = api.get("/api/v1/cluster").json()["nodes"]
            assert len(nodes) == 1, "a local Ray of its own, not the test cluster"
            study = submit(api, **synthetic("embedded", n_trials=3))
            assert wait_for(api, study["id"], timeout_s=120)["status"] == "completed"
        assert (tmp_path / "data" / "adamp-tune.db").exists()
        assert service.proc is not None
        children = psutil.Process(service.proc.pid).children(recursive=True)
        assert children, "the local Ray runs under the service"
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why.
        assert service.terminate(grace_s=60) in (0, -15)
        tail = service.log_tail(20)
        assert "scheduler stopped" in tail
        assert "Application shutdown complete" in tail
        assert "Traceback" not in service.log_path.read_text()
        _, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"left behind: {[p.name() for p in alive]}"

        service.launch()  # a restart on the same data directory
        with httpx.Client(base_url=service.url, timeout=30) as api:
            again = api.get(f"/api/v1/studies/{study['id']}").json()
            assert again["status"] == "completed"
            assert len(all_trials(api, study["id"])) == 3
    finally:
        service.stop()
