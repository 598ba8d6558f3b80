"""Ingest: agent telemetry in, redacted decision events out.

* :func:`event_from_dict` / :func:`read_jsonl` — the versioned JSON event schema
  (``docs/event-schema.md``);
* :class:`OtlpMapper` / :func:`add_otlp_services` — OTLP traces and logs that
  follow the GenAI and OpenInference conventions.
"""

from tenant_agent.ingest.jsonl import LineError, read_jsonl
from tenant_agent.ingest.otlp import OtlpMapper
from tenant_agent.ingest.otlp_server import OtlpReceiver, add_otlp_services
from tenant_agent.ingest.records import EventFormatError, event_from_dict

__all__ = [
    "EventFormatError",
    "LineError",
    "OtlpMapper",
    "OtlpReceiver",
    "add_otlp_services",
    "event_from_dict",
    "read_jsonl",
]
