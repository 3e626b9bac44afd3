"""Request rate limits: one caller, or many heavy readers together, cannot take the service.

The HTTP tests run the real app in this process (no Ray) with limits low enough to reach in
a few requests; the bookkeeping (refill, eviction, the memory bound) is tested on the
limiter alone with a clock the test moves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.auth import Principal
from service.client import ApiError, Client
from service.gate import ANONYMOUS_KEY, PRINCIPAL_KEY
from service.ratelimit import MAX_BUCKETS, RateLimiter, caller_key, is_heavy
from service.settings import Settings
from tests.support.in_process import InProcessService
from tests.support.tokens import make_tokens

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
ORDINARY = "/api/v1/studies"
IMPORTANCE = "/api/v1/studies/999999/importance"
"""A heavy read; the study does not exist, but the limit is taken before routing."""


@pytest.fixture(scope="module")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    """A database with a token per user in ``USERS`` and one admin, ``root``."""
    path = tmp_path_factory.mktemp("ratelimit")
    url = f"sqlite:///{path / 'limits.db'}"
    tokens = make_tokens(url, {**{u: [] for u in USERS}, "root": ["--admin"]})
    return url, tokens, path


@contextmanager
def serving(users_db: tuple[str, dict[str, str], Path], **limits: Any) -> Iterator[str]:
    url, _, path = users_db
    service = InProcessService.start(url, path / "data", auth="required", **limits)
    try:
        yield service.url
    finally:
        service.stop()


def _as(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def test_a_user_over_the_rate_gets_429_with_retry_after_and_others_do_not(users_db) -> None:
    _, tokens, _ = users_db
    with (
        serving(users_db, rate_limit_per_s=1, rate_limit_burst=5, heavy_reads_per_s=0) as url,
        _as(url, tokens["alice"]) as alice,
        _as(url, tokens["bob"]) as bob,
    ):
        answers = [alice.get(ORDINARY) for _ in range(8)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        refused = answers[-1]
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        body = refused.json()
        assert "alice may make 1 requests a second" in body["message"]
        assert "bursts of 5" in body["message"]
        assert "ADAMP_TUNE_RATE_LIMIT_PER_S" in body["message"]
        assert body["detail"] == body["message"]
        assert bob.get(ORDINARY).status_code == 200, "bob has a bucket of his own"
        time.sleep(int(refused.headers["retry-after"]))
        assert alice.get(ORDINARY).status_code == 200, "after Retry-After, alice is served"
        for _ in range(20):
            assert alice.get("/healthz").status_code in (200, 503), "probes are never limited"
        assert alice.get("/dashboard/static/common.js").status_code == 200


def test_heavy_reads_cost_more_than_ordinary_ones(users_db) -> None:
    _, tokens, _ = users_db
    with (
        serving(
            users_db,
            rate_limit_per_s=0.5,
            rate_limit_burst=6,
            heavy_read_cost=3,
            heavy_reads_per_s=0,
        ) as url,
        _as(url, tokens["carol"]) as carol,
        _as(url, tokens["dave"]) as dave,
    ):
        ordinary = [carol.get(ORDINARY).status_code for _ in range(7)]
        assert ordinary == [200] * 6 + [429]
        heavy = [dave.get(IMPORTANCE).status_code for _ in range(3)]
        assert heavy == [404, 404, 429], "a heavy read counts 3: two fit in a burst of 6"
        page = dave.get("/api/v1/studies/999999/trials?limit=1000")
        assert page.status_code == 429, "a page of 1,000 trials is heavy too"
        assert "counts as 3" in page.json()["message"]


def test_the_heavy_budget_limits_many_users_together(users_db) -> None:
    _, tokens, _ = users_db
    with serving(users_db, rate_limit_per_s=100, heavy_reads_per_s=1) as url:
        clients = [_as(url, tokens[u]) for u in USERS]
        try:
            # Each user alone is far under their own limit; together they spend the
            # service-wide budget (bursts of five seconds' worth: 5 reads).
            codes = [c.get(IMPORTANCE).status_code for c in clients]
            assert codes[:5] == [404] * 5
            assert codes[5:] == [429, 429]
            refused = clients[-1].get(IMPORTANCE)
            assert refused.status_code == 429
            assert "ADAMP_TUNE_HEAVY_READS_PER_S" in refused.json()["message"]
            assert "1 heavy reads a second" in refused.json()["message"]
            assert int(refused.headers["retry-after"]) >= 1
            assert clients[-1].get(ORDINARY).status_code == 200, "ordinary reads still pass"
            with _as(url, tokens["root"]) as root:
                assert root.get(IMPORTANCE).status_code == 429, "admins share the budget"
                metrics = root.get("/metrics").text
            assert 'adamp_tune_rate_limited_total{limit="heavy"}' in metrics
        finally:
            for c in clients:
                c.close()


def test_a_client_hammering_without_pause_does_not_stall_another_user(users_db) -> None:
    _, tokens, _ = users_db
    stop = threading.Event()
    refused = 0

    def hammer() -> None:
        nonlocal refused
        with _as(url, tokens["erin"]) as erin:
            while not stop.is_set():
                if erin.get(IMPORTANCE).status_code == 429:
                    refused += 1

    with serving(users_db) as url, _as(url, tokens["frank"]) as frank:
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(2.0)
            slowest = 0.0
            for _ in range(5):
                started = time.monotonic()
                assert frank.get(ORDINARY).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert refused > 0, "the hammering client was refused"
    assert slowest < 2.0, f"another user's request took {slowest:.2f} s"


def test_the_client_waits_retry_after_and_tries_again(users_db) -> None:
    _, tokens, _ = users_db
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with serving(users_db, rate_limit_per_s=1, rate_limit_burst=2) as url:
        with Client(url, token=tokens["grace"], sleep=sleep) as client:
            for _ in range(3):
                assert client.studies()["total"] >= 0
        assert waits, "the third call was refused and waited"
        assert all(w >= 1 for w in waits), "as long as Retry-After said"
        with (
            Client(url, token=tokens["grace"], rate_limit_retries=0) as impatient,
            pytest.raises(ApiError) as err,
        ):
            _call_until_refused(impatient)
        assert err.value.status_code == 429
        assert "ADAMP_TUNE_RATE_LIMIT_PER_S" in err.value.message


def _call_until_refused(client: Client) -> None:
    """Three calls at once: the third at the latest is over a burst of 2."""
    for _ in range(3):
        client.studies()


def test_defaults_leave_a_dashboard_and_a_script_room(users_db) -> None:
    """The defaults: a burst of 100 ordinary calls and a study page's heavy reads pass."""
    _, tokens, _ = users_db
    with serving(users_db) as url, _as(url, tokens["alice"]) as alice:
        assert all(alice.get(ORDINARY).status_code == 200 for _ in range(100))
        assert all(alice.get(IMPORTANCE).status_code == 404 for _ in range(8))
        schema = alice.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path not in ("/healthz", "/metrics"):
                assert "429" in operation["responses"], (method, path)


# ---- the limiter alone -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(clock: FakeClock, **limits: Any) -> RateLimiter:
    return RateLimiter(Settings(**limits), clock=clock)


def test_buckets_refill_at_the_rate_and_admins_get_more() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate_limit_per_s=2, rate_limit_burst=4, rate_limit_admin_factor=3)
    assert all(limiter.check("u", False, False) is None for _ in range(4))
    refusal = limiter.check("u", False, False)
    assert refusal is not None
    assert refusal.limit == "user"
    assert refusal.retry_after_s == 1
    clock.now += 0.5
    assert limiter.check("u", False, False) is None, "half a second refills one token"
    assert all(limiter.check("admin", True, False) is None for _ in range(12))
    assert limiter.check("admin", True, False) is not None


def test_retry_after_is_when_the_tokens_are_there() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate_limit_per_s=1, rate_limit_burst=10, heavy_read_cost=10)
    assert limiter.check("u", False, True) is None
    refusal = limiter.check("u", False, True)
    assert refusal is not None
    assert refusal.retry_after_s == 10
    clock.now += 9.5
    assert limiter.check("u", False, True) is not None
    clock.now += 0.5
    assert limiter.check("u", False, True) is None


def test_idle_buckets_are_forgotten_and_their_number_is_capped() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate_limit_per_s=10, rate_limit_burst=20)
    for i in range(MAX_BUCKETS * 3):
        limiter.check(f"address 10.0.{i // 256}.{i % 256}", False, False)
    assert len(limiter) == MAX_BUCKETS, "one caller per address cannot grow memory for ever"
    clock.now += 2.0  # 20 tokens at 10 a second: every bucket is full again
    limiter.check("someone", False, False)
    assert len(limiter) == 1, "buckets full again are the same as none: dropped"


def test_callers_without_a_token_are_told_apart_by_address() -> None:
    owner = Principal("me", admin=True)
    anonymous = {"client": ("10.1.2.3", 5555), PRINCIPAL_KEY: owner, ANONYMOUS_KEY: True}
    assert caller_key(anonymous) == ("address 10.1.2.3", False), "never an admin's allowance"
    signed = {"client": ("10.1.2.3", 5555), PRINCIPAL_KEY: owner, ANONYMOUS_KEY: False}
    assert caller_key(signed) == ("user me", True)


@pytest.mark.parametrize(
    ("path", "query", "heavy"),
    [
        ("/api/v1/studies/3/importance", b"", True),
        ("/dashboard-api/studies/3/plots", b"group=x", True),
        ("/dashboard-api/comparisons/3/plots", b"", True),
        ("/api/v1/studies/3/trials/7/checkpoint", b"", True),
        ("/api/v1/studies/3/trials", b"limit=1000&intermediate=false", True),
        ("/api/v1/studies/3/trials", b"limit=200", False),
        ("/api/v1/studies/3/trials", b"", False),
        ("/api/v1/studies/3", b"", False),
        ("/api/v1/studies", b"limit=1000", False),
    ],
)
def test_which_reads_are_heavy(path: str, query: bytes, heavy: bool) -> None:
    assert is_heavy(path, query) is heavy
