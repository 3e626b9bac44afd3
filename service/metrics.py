"""Prometheus metrics of the service, exposed at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRIALS_FINISHED = Counter(
    "adamp_tune_trials_finished_total", "Trials that ended, by final state", ["state"]
)
TRIALS_RETRIED = Counter(
    "adamp_tune_trials_retried_total", "Trials re-run after their worker died", ["reason"]
)
TRIALS_RUNNING = Gauge("adamp_tune_trials_running", "Trials running on the cluster now")
STUDIES_ACTIVE = Gauge("adamp_tune_studies_active", "Studies queued or running", ["status"])
SCHEDULER_LEADER = Gauge(
    "adamp_tune_scheduler_leader", "1 when this process holds the scheduler lease"
)
SCHEDULER_TICK = Histogram(
    "adamp_tune_scheduler_tick_seconds",
    "Time of one scheduler iteration",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
REQUEST_LATENCY = Histogram(
    "adamp_tune_http_request_seconds", "API request latency", ["method", "route", "status"]
)
RATE_LIMITED = Counter(
    "adamp_tune_rate_limited_total",
    "Requests refused with 429 by the rate limits, by limit (user: a caller's own rate; "
    "heavy: the service-wide budget of heavy reads)",
    ["limit"],
)
