"""Per-round Prometheus metrics, registered on the running server's registry (``server.metrics``)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter

from server import metrics as server_metrics

_lock = threading.Lock()
_by_registry: dict[int, tuple[Counter, Counter, Counter]] = {}


def _counters(registry: CollectorRegistry) -> tuple[Counter, Counter, Counter]:
    with _lock:
        found = _by_registry.get(id(registry))
        if found is None:
            found = (
                Counter("fedsignal_secagg_rounds", "secure-aggregation rounds finished, by cohort and outcome",
                        ["cohort", "outcome"], registry=registry),
                Counter("fedsignal_secagg_contributors", "tenants whose input a released round summed",
                        ["cohort"], registry=registry),
                Counter("fedsignal_secagg_dropouts", "roster tenants missing from released rounds",
                        ["cohort"], registry=registry),
            )
            _by_registry[id(registry)] = found
        return found


def round_finished(cohort: str, outcome: str, contributors: int, dropouts: int) -> None:
    """Count one finished round (``outcome``: "done" or "aborted")."""
    rounds, contrib, drops = _counters(server_metrics.current().registry)
    rounds.labels(cohort=cohort, outcome=outcome).inc()
    if contributors:
        contrib.labels(cohort=cohort).inc(contributors)
    if dropouts:
        drops.labels(cohort=cohort).inc(dropouts)
