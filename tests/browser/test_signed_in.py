"""Both dashboards in Chromium against the auth-required service: signed in with a token
once, the session lives in an HttpOnly cookie, and no page breaks its own CSP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import Page, tab_on
from tests.support.in_process import InProcessService
from tests.support.studies import submit, synthetic, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def alices_study(secured: tuple[InProcessService, dict[str, str]]) -> dict[str, Any]:
    service, tokens = secured
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as alice:
        study = submit(alice, **synthetic("signed-in-browser", n_trials=3))
        return wait_for(alice, study["id"], timeout_s=120)


@pytest.fixture
def tab(browser: Any, secured: tuple[InProcessService, dict[str, str]]) -> Iterator[Page]:
    service, _ = secured
    with tab_on(browser, service.url) as tab:
        yield tab


def _sign_in(tab: Page, token: str) -> None:
    page = tab.page
    page.locator("#sign-in-token").fill(token)
    page.locator("#sign-in-form button[type=submit]").click()
    page.locator("#sign-in-form").wait_for(state="detached", timeout=15_000)


def test_both_dashboards_after_signing_in_once(
    tab: Page, secured, alices_study: dict[str, Any], artifacts_dir: Path
) -> None:
    _, tokens = secured
    page = tab.page
    first = page.goto("/")
    assert first is not None
    assert first.status == 401
    page.locator("#sign-in-form").wait_for(timeout=10_000)
    page.locator("#sign-in-token").fill("at_wrong")
    page.locator("#sign-in-form button[type=submit]").click()
    page.locator("#sign-in-error").wait_for(state="visible", timeout=10_000)
    assert "unknown or revoked" in page.locator("#sign-in-error").inner_text()
    tab.errors.clear()  # the refused sign-in logs its 401 in the console

    _sign_in(tab, tokens["alice"])
    row = page.locator(f'#studies tbody tr[data-study-id="{alices_study["id"]}"]')
    row.wait_for(timeout=15_000)
    assert page.locator("#signed-in-user").inner_text() == "alice"
    assert tokens["alice"] not in page.evaluate("JSON.stringify(window.localStorage)")
    assert tokens["alice"] not in page.evaluate("document.cookie"), "HttpOnly"
    page.screenshot(path=str(artifacts_dir / "signed-in-studies.png"), full_page=True)

    page.goto(f"/studies/{alices_study['id']}")
    page.wait_for_function("() => document.getElementById('count-complete').textContent === '3'")

    page.goto("/optuna/")
    page.get_by_text("signed-in-browser").first.wait_for(timeout=20_000)
    page.screenshot(path=str(artifacts_dir / "signed-in-optuna.png"), full_page=True)

    page.goto("/docs")
    page.locator(".swagger-ui .opblock").first.wait_for(timeout=20_000)
    page.wait_for_timeout(300)
    assert [e for e in tab.errors if "favicon" not in e] == [], "no CSP violation, no error"

    page.goto("/")
    page.locator("#sign-out").click()
    page.locator("#sign-in-form").wait_for(timeout=10_000)
    tab.errors.clear()
    answer = page.goto("/optuna/api/studies")
    assert answer is not None
    assert answer.status == 401, "signed out of the mounted dashboard too"
