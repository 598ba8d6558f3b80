"""Prometheus metrics of one server: requests, latency, report outcomes, merge lag.

Each server context owns its :class:`ServerMetrics` (``ctx.metrics``, its own
``CollectorRegistry``), so several servers in one process — tests, the demo —
never share counters; code inside a request or a job reports through the
context it was handed, never through a process-wide default.
"""

from __future__ import annotations

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

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.latency.labels(method=method).observe(seconds)

    def report_outcome(self, reason: str) -> None:
        outcome = "accepted" if reason in ACCEPTED_REASONS else "refused"
        self.reports.labels(outcome=outcome, reason=reason).inc()

    def set_merge_lag(self, seconds: float, cohort: str) -> None:
        """Merge lag of one cohort; every series names its cohort (no empty label)."""
        if not cohort:
            raise ValueError("merge lag is published per cohort; the cohort name is required")
        self.merge_lag.labels(cohort=cohort).set(max(0.0, seconds))
