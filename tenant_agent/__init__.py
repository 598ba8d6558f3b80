"""The tenant collector: what a tenant runs inside its own boundary.

Public face (imported lazily so ``tenant_agent.redact`` & co. stay light):

- :class:`Collector` — record events, close windows (DP release under the
  budget ledger), flush the current window, deliver the outbox, pull bundles,
  resolve artifacts.
- :func:`serve` — ``agent run``: the OTLP and resolve listeners and the
  periodic loops around a collector (:class:`ListenError` for a taken port).
- :class:`CollectorConfig` — the typed TOML configuration.
- :class:`WindowOutcome`, :class:`DeliveryResult`, :class:`ImportResult`,
  :class:`CollectorStatus`, :class:`DeadLetter`, :class:`RecordResult` — what
  the API returns.
- :func:`open_channel`, :func:`enroll`, :class:`Enrollment` — transport.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Collector": "tenant_agent.collector",
    "CollectorStatus": "tenant_agent.collector",
    "ImportResult": "tenant_agent.collector",
    "CollectorConfig": "tenant_agent.config",
    "ConfigError": "tenant_agent.config",
    "WindowOutcome": "tenant_agent.release",
    "DeliveryResult": "tenant_agent.outbox",
    "DeadLetter": "tenant_agent.outbox",
    "serve": "tenant_agent.serving",
    "ListenError": "tenant_agent.serving",
    "RecordResult": "tenant_agent.windows",
    "Enrollment": "tenant_agent.transport",
    "TransportError": "tenant_agent.transport",
    "enroll": "tenant_agent.transport",
    "open_channel": "tenant_agent.transport",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tenant_agent' has no attribute {name!r}")
    return getattr(import_module(module), name)
