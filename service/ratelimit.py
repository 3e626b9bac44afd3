"""Request rate limits: a token bucket per caller, a cost per route, and a service-wide
budget for heavy reads, answered before routing.

Why: request handlers share one process (and one interpreter lock) with the scheduler, on
machines whose cores also run trials. Heavy answers are cached, but twenty clients asking
without pause still send over a hundred requests a second, and the scheduler then finishes
a quarter of the trials it would (``benchmarks/RESULTS.md``, issue 13). So, as GitHub's API
or Kubernetes' priority and fairness do:

* every caller has a bucket of ``rate_limit_burst`` tokens refilled at ``rate_limit_per_s``
  a second; an ordinary request costs 1, a heavy read (``HEAVY``) ``heavy_read_cost``;
* heavy reads of everyone together draw on one more bucket, ``heavy_reads_per_s`` a second
  (holding ``HEAVY_BURST_S`` seconds' worth), since many users can starve the scheduler as
  surely as one;
* over either, the answer is ``429`` with ``Retry-After`` (whole seconds, at least 1) and a
  message naming the limit and its value; a refused request costs no token.

Who is a caller: the principal the gate authenticated (``service.gate``); a caller without
a token (auth off, or a public path) is keyed by its address, so that one local script
cannot starve another host's dashboard. Authenticated admins get ``rate_limit_admin_factor``
times the rate and burst (they are who repairs a stuck service) but share the heavy budget
like everyone, since the scheduler's CPU does not care who asks. ``/healthz`` and static
assets are never limited.

Memory is bounded: a bucket left alone long enough to be full again is the same as no
bucket and is dropped, and at most ``MAX_BUCKETS`` are kept (least recently used go first).
Everything runs on the event loop's thread without awaiting, so no lock is needed.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.auth import Principal
from service.gate import ANONYMOUS_KEY, PRINCIPAL_KEY
from service.middleware import send_error
from service.settings import Settings

MAX_BUCKETS = 10_000
"""Callers whose buckets are kept at once; beyond, the least recently seen is forgotten."""
HEAVY_BURST_S = 5.0
"""The service-wide heavy budget holds this many seconds' worth of heavy reads."""
HEAVY_PAGE = 200
"""Trials per page above which a page counts as a heavy read (as in ``service.api.trials``)."""

EXEMPT = re.compile(
    r"/healthz|/dashboard/static/.*|/dashboard/plotly\.min\.js|/optuna/static/.*"
    r"|/optuna/favicon\.ico|/docs/static/.*"
)
"""Paths never limited: liveness probes and static files (no data, no computation)."""

HEAVY = re.compile(
    r"/api/v1/studies/\d+/importance"
    r"|/dashboard-api/(studies|comparisons)/\d+/plots"
    r"|/api/v1/studies/\d+/trials/\d+/checkpoint"
    r"|/optuna/api/studies/\d+/param_importances"
)
"""Heavy reads whatever their query: importances, plots, checkpoint downloads. Pages of
trials (``/api/v1/studies/{id}/trials``) are heavy when ``limit`` is over ``HEAVY_PAGE``."""
_TRIAL_PAGE = re.compile(r"/api/v1/studies/\d+/trials")


def is_heavy(path: str, query_string: bytes) -> bool:
    """Whether a request is one of the heavy reads (``HEAVY``, or a large page of trials)."""
    if HEAVY.fullmatch(path):
        return True
    if _TRIAL_PAGE.fullmatch(path):
        limits = parse_qs(query_string.decode("latin-1")).get("limit", [])
        return any(v.isdigit() and int(v) > HEAVY_PAGE for v in limits)
    return False


@dataclass
class Bucket:
    """Tokens left at ``at`` (monotonic seconds); refilled lazily when next looked at."""

    tokens: float
    at: float
    capacity: float = 0.0
    """The burst it was last refilled to (an admin's is larger)."""

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        self.capacity = burst

    def wait_s(self, cost: float, rate: float) -> float:
        """Seconds until ``cost`` tokens are there (0 if they are)."""
        return max(0.0, (cost - self.tokens) / rate)


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: which limit (``user`` or ``heavy``), and for how long."""

    limit: str
    message: str
    retry_after_s: int


class RateLimiter:
    """The buckets and the decision; separate from ASGI so that it can be tested alone."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = settings.rate_limit_per_s
        self.burst = float(settings.rate_limit_burst)
        self.heavy_cost = float(settings.heavy_read_cost)
        self.admin_factor = settings.rate_limit_admin_factor
        self.heavy_rate = settings.heavy_reads_per_s
        self.heavy_burst = max(1.0, settings.heavy_reads_per_s * HEAVY_BURST_S)
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._heavy = Bucket(self.heavy_burst, clock())

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, admin: bool, heavy: bool) -> Refusal | None:
        """Take the request's tokens, or say why not (taking none)."""
        now = self._clock()
        factor = self.admin_factor if admin else 1.0
        rate, burst = self.rate * factor, self.burst * factor
        cost = self.heavy_cost if heavy else 1.0
        bucket = self._bucket(key, now, rate, burst) if self.rate > 0 else None
        if bucket is not None and bucket.tokens < cost:
            return Refusal(
                "user",
                f"rate limit: {key} may make {_n(rate)} requests a second (bursts of "
                f"{_n(burst)}; a heavy read such as importances, plots, a page of over "
                f"{HEAVY_PAGE} trials or a download counts as {_n(self.heavy_cost)}); "
                "ADAMP_TUNE_RATE_LIMIT_PER_S",
                _seconds(bucket.wait_s(cost, rate)),
            )
        if heavy and self.heavy_rate > 0:
            self._heavy.refill(now, self.heavy_rate, self.heavy_burst)
            if self._heavy.tokens < 1.0:
                return Refusal(
                    "heavy",
                    f"service-wide limit: the service answers {_n(self.heavy_rate)} heavy "
                    "reads a second (importances, plots, large pages, downloads) for all "
                    "users together, and they are taken; ADAMP_TUNE_HEAVY_READS_PER_S",
                    _seconds(self._heavy.wait_s(1.0, self.heavy_rate)),
                )
            self._heavy.tokens -= 1.0
        if bucket is not None:
            bucket.tokens -= cost
        return None

    def _bucket(self, key: str, now: float, rate: float, burst: float) -> Bucket:
        """``key``'s bucket, refilled, after dropping buckets that are full again by now
        (idle for ``burst / rate`` seconds: forgetting them changes nothing) and, past
        ``MAX_BUCKETS``, the least recently used."""
        while self._buckets:
            oldest_key, oldest = next(iter(self._buckets.items()))
            full_at = oldest.at + (oldest.capacity - oldest.tokens) / self.rate
            if now < full_at and len(self._buckets) < MAX_BUCKETS:
                break
            del self._buckets[oldest_key]
        bucket = self._buckets.pop(key, None) or Bucket(burst, now)
        bucket.refill(now, rate, burst)
        self._buckets[key] = bucket
        return bucket


def _n(value: float) -> str:
    return f"{value:g}"


def _seconds(wait_s: float) -> int:
    """``Retry-After``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


def caller_key(scope: Scope) -> tuple[str, bool]:
    """Whose bucket a request draws on, and whether they are an admin.

    The authenticated user by name; a caller without a token (acting as the default owner
    when auth is off, or on a public path) by address, never as an admin."""
    principal = scope.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal) and not scope.get(ANONYMOUS_KEY, False):
        return f"user {principal.name}", principal.admin
    client = scope.get("client")
    return f"address {client[0] if client else 'unknown'}", False


class RateLimit:
    """ASGI middleware (inside the gate, which sets the principal): ``429`` over a limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: RateLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or EXEMPT.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = getattr(scope["app"].state, "adamp", None)
        if state is None or not _enabled(state.settings):
            await self.app(scope, receive, send)
            return
        if self._limiter is None:
            self._limiter = RateLimiter(state.settings)
        key, admin = caller_key(scope)
        refusal = self._limiter.check(
            key, admin, is_heavy(scope["path"], scope.get("query_string", b""))
        )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        metrics.RATE_LIMITED.labels(refusal.limit).inc()
        message = f"{refusal.message}; retry in {refusal.retry_after_s} s"
        await send_error(send, 429, message, [(b"retry-after", b"%d" % refusal.retry_after_s)])


def _enabled(settings: Settings) -> bool:
    return settings.rate_limit_per_s > 0 or settings.heavy_reads_per_s > 0
