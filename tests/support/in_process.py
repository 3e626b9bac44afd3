"""The service in the test's own process: the real app on a thread cluster, no Ray.

``create_app(settings, cluster=ThreadCluster(...))`` served by uvicorn on a thread, so the
tests talk HTTP to it exactly as to ``adamp-tune serve`` (raw sockets included) while trials
run in threads of this process. For validation, auth, security and read tests: anything
that needs Ray's placement, a worker process or a restart uses ``ServiceProcess``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from benchmarks.ports import free_port
from service.app import create_app
from service.cluster.threads import ThreadCluster
from service.settings import Settings
from tests.support.processes import wait_until


@dataclass
class InProcessService:
    """One in-process service: ``url`` and ``database_url`` as ``ServiceProcess`` has them."""

    database_url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, database_url: str, data_dir: Path, **settings: Any) -> InProcessService:
        """Serve the app on a free port; ``settings`` are ``Settings`` fields (``auth=...``).

        The thread cluster is one node with 4 CPUs and 2 GPUs, the session Ray cluster's
        totals, so a request that fits there fits here.
        """
        port = free_port()
        app = create_app(
            Settings(database_url=database_url, data_dir=data_dir, port=port, **settings),
            cluster=ThreadCluster(cpus=4, gpus=2),
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"service-{port}", daemon=True)
        thread.start()
        wait_until(lambda: server.started, 60, 0.05, f"the in-process service on port {port}")
        return cls(database_url, port, server, thread)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
