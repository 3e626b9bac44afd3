"""The service side (API, scheduler, cluster interface, Ray submission) runs without torch.

Only workers import the training stack; a service process that loaded torch for nothing paid
seconds of start-up and hundreds of MB for it.
"""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import importlib, pkgutil, sys
import service.api, service.app, service.scheduler, service.cluster, service.cluster.threads
import service.cluster.ray, workers.remote  # what submits trials to Ray (the task imports torch)
for module in pkgutil.iter_modules(service.api.__path__):
    importlib.import_module(f"service.api.{module.name}")
from service.app import create_app
from service.cluster.threads import ThreadCluster
from service.settings import Settings
create_app(Settings(database_url="sqlite:///unused.db"), cluster=ThreadCluster())
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(",".join(loaded) or "none")
"""


def test_the_service_app_and_scheduler_import_no_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "none", done.stdout[-2000:] + done.stderr[-2000:]
