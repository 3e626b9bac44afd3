"""What the service benchmarks share: ``adamp-tune serve`` started and stopped
in its own process tree, a fresh PostgreSQL database, study bodies, submitting and waiting,
and the soak loop that SIGKILLs trial workers at random.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from benchmarks.ports import free_port

ADAMP_TUNE = str(Path(sys.executable).with_name("adamp-tune"))
FINAL = ("completed", "failed", "cancelled")


def _kill_tree(pid: int, sig: int = signal.SIGTERM, grace_s: float = 30) -> None:
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        root.send_signal(sig)
    _, alive = psutil.wait_procs([root], timeout=grace_s)
    for p in [*alive, *tree[1:]]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards."""
    admin_url = os.environ.get(
        "ADAMP_TUNE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    name = f"adamp_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def running_service(
    workdir: Path, database_url: str | None = None, **settings: str
) -> Iterator[str]:
    """``adamp-tune serve`` on a free port with a 2-CPU local Ray; yields its base URL."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        ADAMP_TUNE_DATA_DIR=str(workdir / "data"),
        ADAMP_TUNE_RAY_NUM_CPUS="2",
        ADAMP_TUNE_LOG_LEVEL="warning",
    )
    if database_url:
        env["ADAMP_TUNE_DATABASE_URL"] = database_url
    env.update({f"ADAMP_TUNE_{k.upper()}": v for k, v in settings.items()})
    log_path = workdir / "service.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [ADAMP_TUNE, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service did not start; see {log_path}")
            time.sleep(0.5)
        yield url
    finally:
        _kill_tree(proc.pid)


def synthetic_study(name: str, n_trials: int, **overrides: Any) -> dict[str, Any]:
    """A study of the ``synthetic`` workload (no tensors: the objective costs ~nothing)."""
    body: dict[str, Any] = {
        "name": name,
        "workload": "synthetic",
        "optimizer": "adamp",
        "n_trials": n_trials,
        "max_concurrent": 2,
        "sampler": "random",
        "pruner": "none",
        "seed": 0,
        "resources": {"cpus": 1},
        "fixed": {"steps": 3},
    }
    body.update(overrides)
    return body


def submit(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = api.post("/api/v1/studies", json=body)
    if answer.status_code != 201:
        raise RuntimeError(f"submission refused: {answer.status_code} {answer.text}")
    study: dict[str, Any] = answer.json()
    return study


def wait_all(
    api: httpx.Client, ids: list[int], timeout_s: float, poll_s: float = 0.1
) -> dict[int, dict[str, Any]]:
    """Poll every ``poll_s`` until every study has ended; returns their final views."""
    deadline = time.monotonic() + timeout_s
    done: dict[int, dict[str, Any]] = {}
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"studies still running after {timeout_s}s")
        for sid in ids:
            if sid not in done:
                study = api.get(f"/api/v1/studies/{sid}").raise_for_status().json()
                if study["status"] in FINAL:
                    done[sid] = study
        time.sleep(poll_s)
    return done


def trials_of(api: httpx.Client, sid: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = (
            api.get(f"/api/v1/studies/{sid}/trials", params={"limit": 1000, "offset": len(items)})
            .raise_for_status()
            .json()
        )
        items += page["items"]
        if len(items) >= page["total"] or not page["items"]:
            return items


def running_trial_pids(api: httpx.Client, ids: list[int]) -> list[int]:
    """Worker processes running a trial right now, as the API reports them."""
    pids = []
    for sid in ids:
        page = api.get(f"/api/v1/studies/{sid}/trials", params={"state": "running"}).json()
        pids += [t["node"]["pid"] for t in page["items"] if t.get("node")]
    return pids


def soak_with_kills(
    api: httpx.Client, ids: list[int], kill_every: float, poll_s: float, rng: random.Random
) -> tuple[int, float]:
    """Wait until every study ``ids`` has ended, SIGKILLing the worker of a random running
    trial every ``kill_every`` s (± 50%); returns the kills made and the seconds taken."""
    start = time.monotonic()
    kills = 0
    next_kill = start + rng.uniform(0.5, 1.5) * kill_every
    while True:
        states = [api.get(f"/api/v1/studies/{sid}").json()["status"] for sid in ids]
        if all(s in FINAL for s in states):
            break
        if time.monotonic() >= next_kill:
            victims = running_trial_pids(api, ids)
            if victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    kills += 1
            next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
        time.sleep(poll_s)
    return kills, time.monotonic() - start


def make_tokens(
    workdir: Path, users: list[str], database_url: str | None = None, admins: int = 0
) -> dict[str, str]:
    """A token per user, made with ``adamp-tune token create`` on the database of a service
    whose data dir is ``workdir / "data"``; the first ``admins`` users are admins."""
    env = dict(os.environ, ADAMP_TUNE_DATA_DIR=str(workdir / "data"))
    if database_url:
        env["ADAMP_TUNE_DATABASE_URL"] = database_url
    tokens = {}
    for i, user in enumerate(users):
        admin = ["--admin"] if i < admins else []
        out = subprocess.run(
            [ADAMP_TUNE, "token", "create", user, *admin],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        tokens[user] = out.stdout.strip().splitlines()[-1]
    return tokens
