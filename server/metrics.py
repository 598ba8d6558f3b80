"""Prometheus metrics of one server: requests, latency, report outcomes, merge lag.

Each running server owns its :class:`ServerMetrics` (its own
``CollectorRegistry``), so several servers in one process — tests, the demo —
never share counters. Code that runs inside a request or a periodic job
reports through the module functions :func:`report_outcome` and
:func:`set_merge_lag`; they reach the metrics of the server that is running
the current request or job (see :func:`bound`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Report outcomes that count as accepted; every other reason is a refusal.
ACCEPTED_REASONS = frozenset({"accepted", "duplicate"})


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fedsignal_requests", "gRPC requests handled, by method and status code",
            ["method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "fedsignal_request_seconds", "gRPC request latency, by method",
            ["method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.reports = Counter(
            "fedsignal_reports", "DP reports by outcome (accepted/refused) and reason",
            ["outcome", "reason"], registry=self.registry,
        )
        self.merge_lag = Gauge(
            "fedsignal_merge_lag_seconds", "age of the oldest stored report not yet merged, per cohort",
            ["cohort"], registry=self.registry,
        )

        self.hotspots_overdue = Gauge(
            "fedsignal_hotspots_overdue", "open hotspots past their remediation SLA, per cohort and failure category",
            ["cohort", "category"], registry=self.registry,
        )

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.latency.labels(method=method).observe(seconds)

    def report_outcome(self, reason: str) -> None:
        outcome = "accepted" if reason in ACCEPTED_REASONS else "refused"
        self.reports.labels(outcome=outcome, reason=reason).inc()

    def set_merge_lag(self, seconds: float, cohort: str = "") -> None:
        self.merge_lag.labels(cohort=cohort).set(max(0.0, seconds))


_current: contextvars.ContextVar[ServerMetrics | None] = contextvars.ContextVar("fedsignal_metrics", default=None)
_fallback = ServerMetrics()


@contextmanager
def bound(metrics: ServerMetrics) -> Iterator[None]:
    """Route :func:`report_outcome`/:func:`set_merge_lag` in this thread to ``metrics``."""
    token = _current.set(metrics)
    try:
        yield
    finally:
        _current.reset(token)


def set_process_default(metrics: ServerMetrics) -> None:
    """Metrics used outside any request or job (the most recently started server)."""
    global _fallback
    _fallback = metrics


def current() -> ServerMetrics:
    return _current.get() or _fallback


def report_outcome(reason: str) -> None:
    """Count one submitted report: ``"accepted"``, ``"duplicate"`` or a refusal reason."""
    current().report_outcome(reason)


def set_hotspots_overdue(cohort: str, category: str, count: int) -> None:
    """Set the overdue-hotspots gauge of one (cohort, category) (server.evaluation.sla, validation-stages)."""
    current().hotspots_overdue.labels(cohort=cohort, category=category).set(count)


def set_merge_lag(seconds: float, cohort: str = "") -> None:
    """Set the merge-lag gauge (seconds) for ``cohort``."""
    current().set_merge_lag(seconds, cohort)
