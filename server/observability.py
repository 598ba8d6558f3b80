"""What a server tells its operators: structured JSON logs and Prometheus metrics.

Logs: one JSON object per line. Log the shape of what happened — method,
status, tenant, durations, counts — never report contents, tokens or key
material. Extra fields go in ``extra={"fields": {...}}`` or through
:func:`log_event`.

Metrics: requests, latency, report outcomes, merge lag, overdue hotspots.
Each server context owns its :class:`ServerMetrics` (``ctx.metrics``, its own
``CollectorRegistry``), so several servers in one process — tests, the demo —
never share counters; code inside a request or a job reports through the
context it was handed, never through a process-wide default.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_RESERVED = {"fields"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in doc:
                    doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """One readable line: the message, then its structured fields as ``key=value`` (a log line
    such as ``rpc`` says nothing without its method and status)."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A CLI entry point may run several times in one process (the demo, tests); a handler bound
    to the stderr of its first run would write to a stream that is gone by the next one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure_json_logging(level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default: the current stderr) as JSON lines; returns the handler."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})


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

    def set_merge_lag(self, seconds: float, cohort: str) -> None:
        """Merge lag of one cohort; every series names its cohort (no empty label)."""
        if not cohort:
            raise ValueError("merge lag is published per cohort; the cohort name is required")
        self.merge_lag.labels(cohort=cohort).set(max(0.0, seconds))

    def set_hotspots_overdue(self, cohort: str, category: str, count: int) -> None:
        """Open hotspots of one (cohort, category) past their remediation SLA."""
        self.hotspots_overdue.labels(cohort=cohort, category=category).set(count)
