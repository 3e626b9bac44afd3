"""Real models through the service, as a user runs them: a team's plug-in package and MNIST-1D.

The example package ``examples/team-model`` is pip-installed into this environment, then
``adamp-tune serve`` starts on the session's Ray cluster (nodes started with ``ray start``), a
study of each workload goes in over REST, and the dashboard shows it in Chromium. A second
plug-in sits on the service's ``PYTHONPATH`` alone, as on a service whose Ray workers lack the
package: its trials must fail naming it, not hang.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.browser import Page, tab_on
from tests.support.ray_cluster import RayCluster
from tests.support.service_process import ServiceProcess
from tests.support.studies import all_trials, submit, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "team-model"
DISTRIBUTION = "adamp-tune-team-model"
CLI = str(Path(sys.executable).with_name("adamp-tune"))

LONELY_MODULE = """
from workers import Workload


def train(ctx):
    ctx.report(1.0, 0)
    return 1.0


WORKLOAD = Workload("lonely-model", train, "loss", "minimize", "installed on the service only")
"""


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _installed() -> bool:
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def team_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``pip install`` the example package, from a copy of its folder so that the build
    leaves nothing in the checkout; offline (its dependencies are the project's own).
    Uninstalled afterwards, unless it was installed before this test.
    """
    was_installed = _installed()
    source = tmp_path_factory.mktemp("team-model") / "team-model"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    try:
        yield
    finally:
        if not was_installed:
            _pip("uninstall", "--yes", DISTRIBUTION)


def _service_only_plugin(folder: Path) -> Path:
    """A plug-in package, as pip would lay it out, in a folder only the service will see."""
    folder.mkdir()
    (folder / "lonely_plugin.py").write_text(LONELY_MODULE)
    info = folder / "lonely_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lonely-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[adamp_tune.workloads]\nlonely-model = lonely_plugin:WORKLOAD\n"
    )
    return folder


@pytest.fixture(scope="module")
def service(
    team_model: None,
    ray_cluster: RayCluster,
    artifacts_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """``adamp-tune serve`` started after the install, on its own SQLite file."""
    base = tmp_path_factory.mktemp("own-models")
    env = dict(
        ray_cluster.env,
        RAY_ADDRESS=ray_cluster.address,
        PYTHONPATH=str(_service_only_plugin(base / "service-only")),
    )
    svc = ServiceProcess.start(
        f"sqlite:///{base / 'adamp-tune.db'}", env, artifacts_dir / "service-own-models.log"
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def tab(browser: Any, service: ServiceProcess) -> Iterator[Page]:
    with tab_on(browser, service.url) as tab:
        yield tab


def _cli(*args: str) -> str:
    done = subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _study_file(path: Path, **overrides: Any) -> dict[str, Any]:
    """A study file as the README submits it (``adamp-tune submit FILE``), with overrides."""
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    return {**body, **overrides}


def _check_study_page(tab: Page, study: dict[str, Any], metric: str, direction: str) -> None:
    """The dashboard's study page names the workload's metric and lists every trial."""
    page = tab.page
    page.goto(f"/studies/{study['id']}")
    n = study["counts"]["complete"]
    page.locator("#trials tbody tr").nth(n - 1).wait_for(timeout=15_000)
    page.wait_for_function(
        "() => document.getElementById('study-status').textContent === 'completed'"
    )
    facts = page.locator("#study-facts").inner_text()
    assert study["workload"] in facts
    assert f"{metric} ({direction})" in facts
    assert page.locator('#trials th[data-key="value"]').inner_text().startswith(metric)
    assert page.locator("#trials tbody tr").count() == n
    # The best trial comes from a request of its own, which may land after the rows.
    page.wait_for_function(
        "m => document.getElementById('best-summary').textContent.includes(m)",
        arg=f"{metric} = ",
        timeout=15_000,
    )
    assert tab.errors == []


def test_a_teams_package_is_installed_seen_and_tuned(
    service: ServiceProcess, api: httpx.Client, tab: Page, artifacts_dir: Path
) -> None:
    local = _cli("workloads", "--local")
    assert "team-mlp" in local
    assert f"{DISTRIBUTION} 0.1.0" in local, "it says which package provides it"
    remote = _cli("workloads", "--url", service.url)
    assert "team-mlp" in remote
    assert "val_log_loss" in remote
    listed = {w["name"]: w for w in api.get("/api/v1/workloads").json()}
    assert listed["team-mlp"]["metric"] == "val_log_loss"
    assert listed["team-mlp"]["direction"] == "minimize"
    assert set(listed["team-mlp"]["args"]) == {"epochs", "batch_size", "hidden"}

    # The example's own study file, with a smaller budget.
    study = submit(
        api,
        **_study_file(
            EXAMPLE / "study.yaml",
            n_trials=4,
            sampler="random",
            pruner="none",
            seed=3,
            fixed={"epochs": 6},
        ),
    )
    assert study["name"] == "team-mlp-adamp"
    assert set(study["search_space"]) == {"lr", "weight_decay", "delta", "wd_ratio"}, (
        "the package's default space"
    )
    study = wait_for(api, study["id"], timeout_s=240)
    assert study["status"] == "completed", study
    assert study["counts"]["complete"] == 4
    assert study["metric"] == "val_log_loss"
    assert study["direction"] == "minimize"
    trials = all_trials(api, study["id"])
    for trial in trials:
        assert [v["step"] for v in trial["intermediate_values"]] == list(range(6))
        assert math.isfinite(trial["value"])
        assert trial["value"] > 0, "a log-loss"
        # Both hidden layers are BatchNorm'ed: AdamP projects nearly all the weights.
        assert trial["scale_invariant_fraction"] > 0.9
    assert study["best_trial"]["value"] == min(t["value"] for t in trials)
    assert study["best_trial"]["value"] < 0.4, "well below chance (log 2 = 0.69)"
    _check_study_page(tab, study, "val_log_loss", "minimize")
    tab.page.screenshot(path=str(artifacts_dir / "dashboard-team-mlp.png"), full_page=True)


def test_mnist1d_cnn_is_tuned_through_the_service(
    ray_cluster: RayCluster, api: httpx.Client, tab: Page
) -> None:
    listed = {w["name"]: w for w in api.get("/api/v1/workloads").json()}
    args = listed["mnist1d-cnn"]["args"]
    assert {"epochs", "batch_size", "width", "num_samples", "data_seed"} <= set(args)
    study = submit(
        api,
        **_study_file(
            ROOT / "examples" / "mnist1d-adamp.yaml",
            n_trials=2,
            sampler="random",
            pruner="none",
            seed=4,
            search_space={"lr": {"low": 3e-3, "high": 3e-2, "log": True}},
            fixed={"epochs": 3, "num_samples": 2000, "width": 16, "batch_size": 32},
        ),
    )
    study = wait_for(api, study["id"], timeout_s=240)
    assert study["status"] == "completed", study
    assert study["counts"]["complete"] == 2
    for trial in all_trials(api, study["id"]):
        assert len(trial["intermediate_values"]) == 3, "a report per epoch"
        assert 0.2 < trial["value"] <= 1.0, "well above chance (10%)"
        assert 0.5 < trial["scale_invariant_fraction"] < 1.0
    cache = Path(ray_cluster.env["ADAMP_TUNE_CACHE_DIR"]) / "mnist1d"
    assert list(cache.glob("mnist1d-2000-42-*.npz")), "the data set is cached on the worker"
    assert not list(cache.glob("*.tmp")), "and written whole (no temporary file left)"
    _check_study_page(tab, study, "val_accuracy", "maximize")


def test_a_worker_without_the_package_fails_the_trial_naming_it(
    api: httpx.Client, tab: Page
) -> None:
    assert "lonely-model" in {w["name"] for w in api.get("/api/v1/workloads").json()}
    study = submit(
        api,
        name="lonely",
        workload="lonely-model",
        optimizer="adamw",
        n_trials=3,
        max_concurrent=1,
        sampler="random",
        pruner="none",
        seed=5,
        search_space={"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    )
    study = wait_for(api, study["id"], timeout_s=120)
    assert study["status"] == "failed"
    assert "'lonely-model' is not installed on" in study["error"]
    trials = all_trials(api, study["id"])
    assert trials
    assert {t["state"] for t in trials} == {"fail"}
    for trial in trials:
        assert "UnknownWorkload: workload 'lonely-model' is not installed on" in trial["error"]
        assert "install the package that provides it" in trial["error"]
    tab.page.goto(f"/studies/{study['id']}")
    tab.page.wait_for_function(
        "() => document.getElementById('study-status').textContent === 'failed'"
    )
    assert "'lonely-model' is not installed" in tab.page.locator("#study-facts").inner_text()
