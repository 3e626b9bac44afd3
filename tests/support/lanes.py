"""Two lanes for ``pytest -n 2`` (pytest-xdist): the tests on the session's shared parts in
one process, every other module beside them in the other.

The *shared lane* is every module with a test that uses the session's Ray cluster (the
services run on it) or the PostgreSQL server. It must stay in one process: a second process
would start a second cluster and second services, and ``test_faults`` restarts PostgreSQL
under whatever else is using it. Every other module (the optimizer, the in-process API
tests, the embedded service with its own local Ray) is a unit of its own, run whole and in
file order by whichever process is free, so module fixtures start once and order-dependent
modules (``test_embedded``'s Ray-loss test comes last) keep their order.

Which modules share is known only where the fixtures are, in the workers at collection; the
scheduler, in the controller, sees test ids alone. The workers write the shared modules to a
file the controller names, and ``LaneScheduling`` reads it once every worker has collected.
(pytest-xdist's ``--dist loadgroup`` would carry the group in the test ids, which pytest 9.2
no longer lets it change: pytest-dev/pytest-xdist#1386.)

Plain ``pytest`` (no ``-n``) runs the same tests one after the other, the shared lane first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

SHARED_LANE = "shared-ray-cluster-and-postgres"
LANES_FILE = "adamp_tune_lanes_file"
"""The ``workerinput`` key naming the file the workers write the shared modules to."""
_LANES_DIR = pytest.StashKey[Path]()


def uses_shared_parts(item: pytest.Item) -> bool:
    """Whether ``item`` needs the session's Ray cluster or the PostgreSQL server."""
    fixtures = getattr(item, "fixturenames", ())
    return "ray_cluster" in fixtures or item.get_closest_marker("postgres") is not None


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(trylast=True)  # after -m/-k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the shared lane first (it is the longer one), and tell the controller which
    modules are in it."""
    shared = sorted({module_of(item.nodeid) for item in items if uses_shared_parts(item)})
    items.sort(key=lambda item: module_of(item.nodeid) not in shared)
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    if LANES_FILE in workerinput:
        target = Path(workerinput[LANES_FILE])
        written = target.with_name(f"{target.name}.{workerinput['workerid']}")
        written.write_text(json.dumps(shared))
        os.replace(written, target)  # every worker writes the same list; none sees half


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller: give each worker the file to write the shared modules to."""
    config: pytest.Config = node.config
    if _LANES_DIR not in config.stash:
        config.stash[_LANES_DIR] = Path(tempfile.mkdtemp(prefix="adamp-tune-lanes-"))
    node.workerinput[LANES_FILE] = str(config.stash[_LANES_DIR] / "shared.json")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Controller: schedule by lane whatever ``--dist`` asks for, except ``each``."""
    if config.getvalue("dist") == "each" or _LANES_DIR not in config.stash:
        return None
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415 - only with xdist

    class LaneScheduling(LoadScopeScheduling):
        """Units of work: the shared lane, then each other module, in collection order."""

        def __init__(self, config: pytest.Config, log: Any, lanes_file: Path) -> None:
            config.option.loadscopereorder = False  # the shared lane is first by design
            super().__init__(config, log)
            self._lanes_file = lanes_file
            self._shared: set[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._shared is None:  # read once all workers have collected
                self._shared = set(json.loads(self._lanes_file.read_text()))
            module = module_of(nodeid)
            return SHARED_LANE if module in self._shared else module

    return LaneScheduling(config, log, config.stash[_LANES_DIR] / "shared.json")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _LANES_DIR in config.stash:
        shutil.rmtree(config.stash[_LANES_DIR], ignore_errors=True)
