"""The web dashboard in a real headless Chromium, against the session's SQLite service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import Page, tab_on
from tests.support.service_process import ServiceProcess
from tests.support.studies import submit, synthetic, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.ray]

XSS_NAME = "<script>alert(1)</script>"
SPACE = {
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
    "delta": {"low": 0.01, "high": 1.0, "log": True},
    "wd_ratio": {"low": 0.0, "high": 1.0},
}


@pytest.fixture(scope="module")
def api(sqlite_service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_service.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def studies(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """A finished 8-trial study over lr, delta, wd_ratio, and one with a hostile name."""
    finished = submit(
        api,
        **synthetic("dashboard-finished", n_trials=8, search_space=SPACE, fixed={"steps": 4}),
    )
    xss = submit(api, **synthetic(XSS_NAME, n_trials=1))
    return {
        "finished": wait_for(api, finished["id"], timeout_s=120),
        "xss": wait_for(api, xss["id"], timeout_s=120),
    }


@pytest.fixture
def tab(browser: Any, sqlite_service: ServiceProcess) -> Iterator[Page]:
    with tab_on(browser, sqlite_service.url) as tab:
        yield tab


def _row(page: Any, study_id: int) -> Any:
    return page.locator(f'#studies tbody tr[data-study-id="{study_id}"]')


def test_list_page_shows_finished_study(
    tab: Page, studies: dict[str, dict[str, Any]], artifacts_dir: Path
) -> None:
    study = studies["finished"]
    page = tab.page
    page.goto("/")
    row = _row(page, study["id"])
    row.wait_for(timeout=10_000)
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "dashboard-finished"
    assert cells[5] == "completed"
    assert "8 complete" in cells[6]
    assert cells[7], "best value shown"
    page.wait_for_function(
        "() => document.getElementById('cluster-summary').textContent.includes('GPUs in use')"
    )
    assert "GPUs in use" in page.locator("#cluster-summary").inner_text()
    page.screenshot(path=str(artifacts_dir / "dashboard-studies.png"), full_page=True)
    assert tab.errors == []


def test_status_filter(tab: Page, studies: dict[str, dict[str, Any]]) -> None:
    page = tab.page
    page.goto("/")
    _row(page, studies["finished"]["id"]).wait_for(timeout=10_000)
    page.select_option("#filter-status", "cancelled")
    finished_row = f'#studies tbody tr[data-study-id="{studies["finished"]["id"]}"]'
    page.wait_for_function(f"() => !document.querySelector('{finished_row}')")
    statuses = page.locator("#studies tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert set(statuses) <= {"cancelled"}
    assert "status=cancelled" in page.url
    page.select_option("#filter-status", "completed")
    _row(page, studies["finished"]["id"]).wait_for(timeout=10_000)
    statuses = page.locator("#studies tbody tr").evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert statuses
    assert set(statuses) == {"completed"}
    assert tab.errors == []


def test_study_page_plots_every_complete_trial(
    tab: Page, studies: dict[str, dict[str, Any]], artifacts_dir: Path
) -> None:
    study = studies["finished"]
    n = study["counts"]["complete"]
    assert n == 8
    page = tab.page
    page.goto(f"/studies/{study['id']}")
    page.locator("#trials tbody tr").nth(n - 1).wait_for(timeout=10_000)
    page.wait_for_function(
        "() => ['history', 'slice', 'parallel', 'importance', 'contour-lr-wd_ratio', "
        "'contour-lr-delta']"
        ".every(k => { const d = document.getElementById('plot-' + k); return d && d.data; })",
        timeout=30_000,
    )
    history = page.evaluate("document.getElementById('plot-history').data")
    objective = next(t for t in history if t.get("name") == "Objective Value")
    assert sorted(objective["x"]) == list(range(n))
    parallel = page.evaluate("document.getElementById('plot-parallel').data")
    assert len([t for t in parallel if t.get("mode") == "lines"]) == n, "a line per trial"
    slices = page.evaluate("document.getElementById('plot-slice').data")
    points = [t for t in slices if t.get("mode") == "markers"]
    assert {len(t["x"]) for t in points} == {n}
    importance = page.evaluate("document.getElementById('plot-importance').data")
    assert set(importance[0]["y"]) == {"lr", "delta", "wd_ratio"}
    assert page.locator("#trials tbody tr").count() == n
    assert "AdamP(params, lr=" in page.locator("#best-python").inner_text()
    # The table sorts by a column when its header is clicked.
    page.locator('#trials th[data-key="value"]').click()
    values = [float(v) for v in page.locator("#trials tbody tr td:nth-child(3)").all_inner_texts()]
    assert values == sorted(values)
    assert page.locator("#count-complete").inner_text() == str(n)
    page.screenshot(path=str(artifacts_dir / "dashboard-study.png"), full_page=True)
    assert tab.errors == []


def test_running_study_progress_advances_without_reload(
    tab: Page, api: httpx.Client, unique_name: str
) -> None:
    study = submit(
        api,
        **synthetic(unique_name, n_trials=4, max_concurrent=2, fixed={"steps": 10, "sleep_s": 0.2}),
    )
    page = tab.page
    page.goto(f"/studies/{study['id']}")
    page.wait_for_function("() => document.getElementById('study-status').textContent !== ''")
    page.evaluate("window.__loaded = true")  # gone if the page reloads
    first = int(page.locator("#count-complete").inner_text())
    assert first < 4, "the page opened before the study ended"
    page.wait_for_function(
        "() => document.getElementById('count-complete').textContent === '4'", timeout=60_000
    )
    page.wait_for_function(
        "() => document.getElementById('study-status').textContent === 'completed'", timeout=15_000
    )
    assert page.evaluate("window.__loaded") is True
    assert page.locator("#trials tbody tr").count() == 4
    assert tab.errors == []


def test_hostile_study_name_renders_as_text(tab: Page, studies: dict[str, dict[str, Any]]) -> None:
    study = studies["xss"]
    page = tab.page
    page.goto("/?status=completed")
    row = _row(page, study["id"])
    row.wait_for(timeout=10_000)
    assert row.locator("td.name a").inner_text() == XSS_NAME
    assert page.locator("#studies script").count() == 0
    page.goto(f"/studies/{study['id']}")
    page.wait_for_function(
        f"() => document.getElementById('study-name').textContent === {XSS_NAME!r}"
    )
    assert page.title().startswith(XSS_NAME)
    assert page.locator("main script").count() == 0
    # One complete trial: notes instead of the plots that need two.
    page.wait_for_function("() => document.getElementById('plots').dataset.nComplete === '1'")
    note = page.locator("#plot-box-importance .note").inner_text()
    assert "at least 2 complete trials" in note
    page.wait_for_timeout(500)
    assert tab.dialogs == []
    assert tab.errors == []


def test_optuna_dashboard_is_mounted(
    tab: Page, api: httpx.Client, studies: dict[str, dict[str, Any]]
) -> None:
    answer = api.get("/optuna", follow_redirects=True)
    assert answer.status_code == 200
    assert str(answer.url).endswith("/optuna/dashboard")
    names = [s["study_name"] for s in api.get("/optuna/api/studies").json()["study_summaries"]]
    assert "dashboard-finished" in names
    page = tab.page
    page.goto("/optuna/")
    page.get_by_text("dashboard-finished").first.wait_for(timeout=20_000)
    assert [e for e in tab.errors if "favicon" not in e] == []
