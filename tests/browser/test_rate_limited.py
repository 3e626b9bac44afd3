"""The dashboard over the rate limits: it waits ``Retry-After`` and retries, and the page
fills in, instead of showing an error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import tab_on
from tests.support.in_process import InProcessService

pytestmark = pytest.mark.browser


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[InProcessService]:
    """A service whose callers may make 2 requests at once and 1 a second after that."""
    service = InProcessService.start(
        f"sqlite:///{tmp_path / 'tight.db'}",
        tmp_path / "data",
        auth="off",
        rate_limit_per_s=1,
        rate_limit_burst=2,
    )
    try:
        yield service
    finally:
        service.stop()


def test_the_dashboard_waits_and_retries_when_refused(browser: Any, tight) -> None:
    with tab_on(browser, tight.url) as tab:
        answers: list[tuple[str, int]] = []
        tab.page.on(
            "response",
            lambda r: answers.append((r.url, r.status)) if "/api/v1/" in r.url else None,
        )
        spent: list[int] = []

        def over_the_limit(route: Any) -> None:
            """The cluster's summary, the first time: its caller spends what is left of its
            requests first, so the service's own 429 (with Retry-After) is the answer however
            slowly the page's first requests came (a busy machine refilled the bucket)."""
            if spent:
                route.continue_()
                return
            for _ in range(20):  # a burst of 2: the third at the latest is refused
                answer = tab.page.request.get(route.request.url)
                spent.append(answer.status)
                if answer.status == 429:
                    route.fulfill(response=answer)
                    return
            route.continue_()  # never refused: the assertions below say so

        tab.page.route("**/api/v1/cluster", over_the_limit)
        tab.page.goto("/")
        # The cluster's summary is refused, then fetched again after Retry-After.
        tab.page.wait_for_function(
            "() => document.getElementById('cluster-summary').textContent.includes('nodes')",
            timeout=15_000,
        )
        refused = [url for url, status in answers if status == 429]
        assert refused, answers
        assert any(url == refused[0] and status == 200 for url, status in answers), answers
        assert tab.page.locator("#error-message").is_hidden()
        other = [e for e in tab.errors if "429" not in e]
        assert other == [], "nothing but the refused requests' own console lines"
