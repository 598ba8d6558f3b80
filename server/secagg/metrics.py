"""Per-round Prometheus metrics, registered on the server context's registry (``ctx.metrics``).

The servicer and the job bind the context's registry around the domain calls (:func:`bound`),
so :mod:`server.secagg.rounds` stays free of the context.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter

_registry: contextvars.ContextVar[CollectorRegistry | None] = contextvars.ContextVar("fedsignal_secagg_registry",
                                                                                   default=None)


@contextmanager
def bound(registry: CollectorRegistry) -> Iterator[None]:
    token = _registry.set(registry)
    try:
        yield
    finally:
        _registry.reset(token)


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
    registry = _registry.get()
    if registry is None:
        return
    rounds, contrib, drops = _counters(registry)
    rounds.labels(cohort=cohort, outcome=outcome).inc()
    if contributors:
        contrib.labels(cohort=cohort).inc(contributors)
    if dropouts:
        drops.labels(cohort=cohort).inc(dropouts)
