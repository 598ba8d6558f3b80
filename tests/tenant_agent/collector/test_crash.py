"""kill -9 in the middle of a window: no acknowledged event lost, none counted twice."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path

import pytest

from tenant_agent.collector import Collector
from tenant_agent.windows import WindowBook

from .fakes import T0, make_config, read_line, remaining_lines, spawn_worker, turn

SIZE = 200


def batch(b: int) -> list:  # type: ignore[type-arg]
    # Must match tests/collector/worker.py "record_loop".
    return [replace(turn(f"s{b}-{i}", T0 + (b * SIZE + i) % 3000), event_id=f"e{b}-{i}") for i in range(SIZE)]


@pytest.mark.slow
def test_sigkill_mid_window_loses_no_acknowledged_event_and_counts_none_twice(tmp_path: Path) -> None:
    proc = spawn_worker("record_loop", str(tmp_path), "1000", str(SIZE))
    try:
        read_line(proc, "ready")
        acked = -1
        while acked < 8:
            acked = int(read_line(proc, "acked ").split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Acks the worker printed before it died count as acknowledged too.
        for line in remaining_lines(proc):
            if line.startswith("acked "):
                acked = max(acked, int(line.split()[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
    with Collector(make_config(tmp_path)) as c:
        recorded = c.status().counters["events_recorded"]
        # Every acknowledged batch is there; at most the in-flight one besides.
        assert (acked + 1) * SIZE <= recorded <= (acked + 2) * SIZE
        # The sender re-sends what it never saw acknowledged: each event counts once.
        retry = c.record_many(batch(acked + 1))
        assert retry.recorded + retry.duplicates == SIZE
        total = (acked + 2) * SIZE
        assert c.status().counters["events_recorded"] == total
        with c.store.engine.connect() as conn:
            table = WindowBook.bounded_table(conn, int(T0), c.schema)
        turns = c.schema.cell_index({"measure": "turns", "intent": "billing", "artifact_version": "baseline"})
        assert table[turns] == total  # one session per event: nothing clipped, nothing doubled


@pytest.mark.slow
def test_sigkill_while_serving_otlp_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    proc = spawn_worker("serve", str(tmp_path))
    acked = 0
    try:
        port = int(read_line(proc, "serving ").split()[1])
        provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10))
        )
        tracer = provider.get_tracer("agent")
        for i in range(12):
            with tracer.start_as_current_span(
                "invoke_agent support",
                attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": f"conv-{i}",
                            "fedsignal.intent": "billing"},
            ), tracer.start_as_current_span(
                "execute_tool lookup", attributes={"gen_ai.operation.name": "execute_tool",
                                                   "gen_ai.tool.name": "lookup_order"},
            ):
                pass
            # The root span's Export returned: this turn is acknowledged.
            acked += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        provider.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
    with Collector(make_config(tmp_path)) as c:
        assert c.status().counters["events_recorded"] == acked
        assert c.status().windows["open"] >= 1
