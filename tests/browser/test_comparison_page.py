"""The comparison page in a real headless Chromium: verdict, tables, plots side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import tab_on
from tests.support.comparisons import comparison_body, submit_comparison, wait_comparison
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.browser, pytest.mark.ray]


def test_comparison_page_shows_the_verdict_and_the_plots(
    browser: Any, sqlite_service: ServiceProcess, unique_name: str, artifacts_dir: Path
) -> None:
    with httpx.Client(base_url=sqlite_service.url, timeout=30) as api:
        created = submit_comparison(api, **comparison_body(unique_name, n_trials=2, seeds=2))
        done = wait_comparison(api, created["id"])
    assert done["status"] == "completed"
    verdict = done["report"]["verdict"]
    with tab_on(browser, sqlite_service.url) as tab:
        page = tab.page
        page.goto(f"/comparisons/{created['id']}")
        page.wait_for_function(
            "() => document.getElementById('verdict').textContent.includes('AdamP')"
        )
        assert page.locator("#verdict").inner_text() == verdict
        assert page.locator("#comparison-status").inner_text() == "completed"
        page.wait_for_function(
            "() => ['tuning', 'seeds'].every(k => { const d = document.getElementById('plot-' + k);"
            " return d && d.data; })",
            timeout=30_000,
        )
        tuning = page.evaluate("document.getElementById('plot-tuning').data")
        assert [t["name"] for t in tuning] == ["adamp", "adamw"], "the curves side by side"
        seeds = page.evaluate("document.getElementById('plot-seeds').data")
        shown = sorted(v for t in seeds for v in t["y"])
        recorded = sorted(
            v for o in done["report"]["optimizers"] for v in o["evaluation"]["values"]
        )
        assert shown == pytest.approx(recorded), "every evaluation seed's value is drawn"
        # The synthetic workload has no weights: the page says so instead of an empty plot.
        assert "does not report" in page.locator("#plot-weight-norms").inner_text()
        rows = page.locator("#studies tbody tr")
        assert rows.count() == 4
        assert page.locator("#pairs tbody tr").count() == 1
        page.screenshot(path=str(artifacts_dir / "dashboard-comparison.png"), full_page=True)
        assert tab.errors == []
