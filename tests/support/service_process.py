"""The service as a user runs it: ``adamp-tune serve`` in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.ports import free_port
from tests.support.processes import kill_tree, wait_until

ADAMP_TUNE = str(Path(sys.executable).with_name("adamp-tune"))


def embedded_env() -> dict[str, str]:
    """This environment without Ray's or adamp-tune's variables: a service started with it
    runs the embedded default (SQLite, a local Ray of its own), as on a new user's machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ADAMP_TUNE_"))}


@dataclass
class ServiceProcess:
    """One running service; ``restart()`` starts it again on the same database."""

    database_url: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        database_url: str,
        base_env: dict[str, str],
        log_path: Path,
        **settings: str,
    ) -> ServiceProcess:
        env = dict(base_env)
        env.update(
            ADAMP_TUNE_DATABASE_URL=database_url,
            ADAMP_TUNE_DATA_DIR=str(log_path.parent / "data"),
            PYTHONUNBUFFERED="1",
        )
        env.update({f"ADAMP_TUNE_{k.upper()}": v for k, v in settings.items()})
        log_path.write_bytes(b"")  # one log per session; restarts append to it
        service = cls(database_url, env, log_path)
        service.launch()
        return service

    def launch(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [ADAMP_TUNE, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.ready, 120, 0.1, f"service on {self.url} (log: {self.log_path})")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the service exited; see {self.log_path}:\n{self.log_tail()}")
        try:
            answer = httpx.get(f"{self.url}/healthz", timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, grace_s: float = 40) -> int | None:
        """SIGTERM, as an orchestrator stops it; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace_s)
        finally:
            kill_tree(self.proc, grace_s=1)

    def kill(self) -> None:
        """SIGKILL the service (and only the service: Ray workers belong to the cluster)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Cleanup: SIGTERM to the service, which stops its trials and any local Ray of its
        own; then to whatever of its tree is left, and SIGKILL after a grace."""
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc, grace_s=10, root_first_s=10)
