"""A real multi-node Ray cluster on this machine, started once per test session.

A head node with CPUs and no GPUs, and worker nodes that may declare GPUs the machine does
not have: Ray schedules by declared resources and sets ``CUDA_VISIBLE_DEVICES``, which is
how GPU placement is tested without a GPU. Ray listens on a free port (Redis owns 6379
here) and uses token authentication, as a team cluster should.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.ports import free_port
from tests.support.processes import kill_tree, wait_until

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class RayCluster:
    """The cluster's address, the environment that reaches it, and its node processes."""

    address: str
    env: dict[str, str]
    temp_dir: Path
    log_dir: Path
    head_cpus: int = 2
    head: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        base: Path,
        *,
        head_cpus: int = 2,
        workers: dict[str, dict[str, Any]] | None = None,
    ) -> RayCluster:
        """Start the head and the ``workers`` (name: ``add_node``'s keywords) at once: a
        worker's ``ray start`` waits for the head by itself, so the nodes start side by
        side (about 4 s sooner here than one after the other)."""
        temp_dir = Path(f"/tmp/adamp-ray-{os.getpid()}")  # Ray's socket paths must stay short
        log_dir = base / "ray-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_USAGE_STATS_ENABLED="0",
            # Workloads' data caches (MNIST-1D) stay with the test artifacts, out of ~/.cache.
            ADAMP_TUNE_CACHE_DIR=str(base / "cache"),
        )
        port = free_port()
        cluster = cls(f"127.0.0.1:{port}", env, temp_dir, log_dir, head_cpus=head_cpus)
        cluster.start_head(wait=False)
        for name, spec in (workers or {}).items():
            cluster.add_node(name, wait=False, **spec)
        cluster.wait_nodes(1 + len(workers or {}))
        return cluster

    def start_head(self, *, wait: bool = True) -> None:
        """Start the head node on the cluster's port (again, after ``kill_head``)."""
        self.head = self._spawn(
            "head",
            [
                "--head",
                f"--port={self.address.rpartition(':')[2]}",
                f"--num-cpus={self.head_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}",
            ],
        )
        if wait:
            self.wait_nodes(1)

    def kill_head(self) -> None:
        """SIGKILL the head node's processes (GCS, raylet, its workers), as a crash would."""
        assert self.head is not None
        kill_tree(self.head, grace_s=5, sig=signal.SIGKILL)
        self.processes.remove(self.head)
        self.head = None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                RAY,
                "start",
                *args,
                "--node-ip-address=127.0.0.1",
                "--block",
                "--disable-usage-stats",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def add_node(
        self,
        name: str,
        *,
        cpus: int,
        gpus: int = 0,
        resources: dict[str, float] | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Join another node (a separate raylet on this machine); with ``wait``, return once
        it is alive."""
        expected = len(self.alive_nodes()) + 1 if wait else 0
        args = [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        proc = self._spawn(name, args)
        if wait:
            self.wait_nodes(expected)
        return proc

    def alive_nodes(self) -> list[dict[str, object]]:
        """Ray's view of the live nodes (asked from a separate process, as a client would)."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR')\n"
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            return []
        nodes: list[dict[str, object]] = json.loads(out.stdout.strip().splitlines()[-1])
        return nodes

    def wait_nodes(self, count: int, timeout_s: float = 90) -> None:
        wait_until(
            lambda: len(self.alive_nodes()) >= count, timeout_s, 1.0, f"{count} Ray nodes alive"
        )

    def stop(self) -> None:
        for proc in reversed(self.processes):
            kill_tree(proc, grace_s=3)
        self.processes.clear()
