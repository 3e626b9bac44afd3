"""The two lanes of ``make test`` (tests/support/lanes.py), checked on a small suite of their
own run with ``pytest -n 2``: what uses the session's Ray cluster or PostgreSQL runs in one
process (one cluster; nothing beside the test that restarts PostgreSQL), first; every other
module runs whole, in file order, in one process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import json, os
import pytest

pytest_plugins = ["tests.support.lanes"]

def record(name):
    with open(os.environ["LANES_RECORD"], "a") as f:
        f.write(json.dumps([name, os.getpid()]) + "\\n")

@pytest.fixture(scope="session")
def ray_cluster():
    record("cluster started")
"""

SHARED_A = """
from conftest import record

def test_one(ray_cluster):
    record("a.one")

def test_two():
    record("a.two")
"""

SHARED_B = """
import pytest
from conftest import record

@pytest.mark.postgres
def test_restarts_postgres():
    record("b.postgres")
"""

LIGHT = """
import time
from conftest import record

def test_first():
    record("{name}.first")
    time.sleep(0.2)

def test_second():
    record("{name}.second")
"""


def test_the_shared_parts_get_one_process_and_modules_stay_whole(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = pytester.path / "record.jsonl"
    monkeypatch.setenv("LANES_RECORD", str(record))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # only what the lanes need
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(pytester.path)]))
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    postgres: uses PostgreSQL\n")
    pytester.makepyfile(
        test_c_light=LIGHT.format(name="c"),
        test_d_light=LIGHT.format(name="d"),
        test_e_light=LIGHT.format(name="e"),
        test_x_shared=SHARED_A,
        test_y_shared=SHARED_B,
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)

    rows = [json.loads(line) for line in record.read_text().splitlines()]
    pid = dict(rows)
    assert [name for name, _ in rows].count("cluster started") == 1
    shared = {pid["cluster started"], pid["a.one"], pid["a.two"], pid["b.postgres"]}
    assert len(shared) == 1, "the shared lane ran in more than one process"
    in_shared = [name for name, p in rows if p in shared]
    assert in_shared[:4] == ["cluster started", "a.one", "a.two", "b.postgres"], in_shared
    for module in "cde":
        assert pid[f"{module}.first"] == pid[f"{module}.second"], f"{module} was split"
        order = [name for name, _ in rows if name.startswith(f"{module}.")]
        assert order == [f"{module}.first", f"{module}.second"]
    assert len({p for _, p in rows}) == 2, "both processes had work"
