"""`serve` end to end, and the PII scan over every byte written and sent.

Agents send through the real OpenTelemetry SDK and its OTLP/gRPC exporter,
the Python API (dict events) and a JSON Lines file; the collector restarts,
seals and delivers to the real server (SQLite, mutual TLS on loopback). None
of the seeded personal data may appear in the store (incl. -wal/-shm), any
other file under state_dir, the logs, or anything the server stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from aggregation.clock import from_unix
from tenant_agent import replay_agent
from tenant_agent.collector import Collector
from tenant_agent.config import CollectorConfig, LoopConfig, RedactionSettings
from tenant_agent.serving import Serving, serve
from tenant_agent.transport import enroll
from tests.harness import Harness, start_harness

from .fakes import HOUR

PII = {
    "email": "marguerite.quuxley@example.org",
    "phone": "+44 20 7946 0958",
    "ssn": "078-05-1120",
    "card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "name": "Zebulon Quartermaine",
    "ticket": "TCK-734512",
}
SEEDED = list(PII.values()) + ["marguerite", "quuxley", "Quartermaine", "4111111111111111", "078051120",
                                "GB82WEST12345698765432", "734512"]


def pii_text(i: int) -> str:
    return (f"Hi, I am {PII['name']} ({PII['email']}, {PII['phone']}), SSN {PII['ssn']}, "
            f"card {PII['card']}, IBAN {PII['iban']}, ticket {PII['ticket']}, order #{i}")


def dict_event(i: int, at: float) -> dict[str, object]:
    return {
        "schema_version": "1",
        "event_id": f"api-{i}",
        "session_id": f"sess-{i % 4}",
        "user_id": PII["email"],
        "timestamp": at,
        "intent": "billing",
        "text": pii_text(i),
        "tool_calls": [{"name": "lookup_order", "error": "timeout" if i % 2 else None}],
        "outcome": "failure" if i % 2 else "success",
    }


def assert_clean(blob: bytes, where: str) -> None:
    lowered = blob.lower()
    for value in SEEDED:
        assert value.lower().encode() not in lowered, f"{value!r} found in {where}"


@contextmanager
def serving(c: Collector) -> Iterator[Serving]:
    """``serve`` on a thread, until the block ends (then stopped and joined)."""
    stop = threading.Event()
    ready: list[Serving] = []
    thread = threading.Thread(target=serve, args=(c, stop), kwargs={"ready": ready.append})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready, "serve did not start"
        yield ready[0]
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def send_otlp_turns(port: int, n: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10))
    )
    tracer = provider.get_tracer("agent")
    try:
        for i in range(n):
            with tracer.start_as_current_span(
                "invoke_agent support",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "support",
                    "gen_ai.conversation.id": f"conv-{i}",
                    "user.id": PII["email"],
                    "fedsignal.intent": "refund",
                    "fedsignal.artifact.version": "baseline",
                    # Read, then discarded unread: no replay capture stores text, no taxonomy rule reads it.
                    "fedsignal.text": pii_text(i),
                    # Not on the allow-list: must never be read.
                    "gen_ai.prompt": pii_text(i),
                    "input.value": pii_text(i),
                },
            ), tracer.start_as_current_span(
                "execute_tool lookup_order",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                            "error.type": "timeout"},
            ) as tool:
                tool.set_status(Status(StatusCode.ERROR, pii_text(i)))
    finally:
        provider.shutdown()


@pytest.mark.slow
def test_pipeline_with_restart_writes_and_sends_no_seeded_pii(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    caplog.set_level(logging.DEBUG)
    harness = start_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    try:
        run_pipeline(harness, tmp_path)
    finally:
        harness.running.stop(0)
        harness.ctx.engine.dispose()
    # Everything the real server stored (its database with the reports, its state) is clean too.
    server_files = [p for p in tmp_path.glob("server.db*")] + [p for p in (tmp_path / "server").rglob("*")
                                                                if p.is_file()]
    assert any(p.name == "server.db" for p in server_files)
    for path in server_files:
        assert_clean(path.read_bytes(), str(path))
    assert_clean(caplog.text.encode(), "the collector's and the server's logs")


def run_pipeline(harness: Harness, tmp_path: Path) -> None:
    state = tmp_path / "state"
    enroll(harness.enroll_target, harness.token("acme", "retail"), state, harness.ca.certificate_pem,
           signals_address=harness.mtls_target)
    cfg = CollectorConfig(
        state_dir=state,
        otlp_listen="127.0.0.1:0",
        resolve_listen="127.0.0.1:0",
        redaction=RedactionSettings(patterns={"ticket": r"TCK-[0-9]{6}"},
                                    dictionaries={"customer_name": [PII["name"]]}),
        loops=LoopConfig(close_interval_seconds=3600, deliver_interval_seconds=3600, bundle_interval_seconds=3600),
    )
    # Past windows (the server takes a window once it has ended): two hours ago, aligned.
    past = (time.time() // HOUR - 2) * HOUR
    jsonl = tmp_path / "events.jsonl"  # the tenant's own input, outside the collector's state
    jsonl.write_text("\n".join(json.dumps(dict_event(100 + i, past + 60 + i)) for i in range(10))
                     + "\n{not json " + PII["email"] + "\n")
    with Collector(cfg) as c:
        with serving(c) as running:
            send_otlp_turns(running.otlp_port, 5)
            url = f"http://127.0.0.1:{running.resolve_port}/v1/resolve?artifact=routing&session=s1"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert json.loads(response.read())["version"] == "baseline"
            c.record_many([dict_event(i, past + i) for i in range(10)])
            result = c.import_jsonl(jsonl)
            assert (result.imported, len(result.errors)) == (10, 1)
        status = c.status()
        assert status.counters["events_recorded"] == 25
        # Every free text (5 OTLP turns, 10 API events, 10 JSONL lines) was dropped unread, never redacted;
        # the end-user ids were pseudonymised.
        assert status.texts_discarded == 25 and not status.redaction
        # While the store is open its write-ahead log holds the latest pages.
        live = [p for p in state.rglob("*") if p.is_file()]
        assert any(p.name == "collector.db-wal" for p in live)
        for path in live:
            assert_clean(path.read_bytes(), str(path))
    # Restart: a new process would see exactly this store.
    with Collector(cfg) as c:
        c.record(dict_event(999, past + 5))
        outcomes = c.close_windows(now=from_unix(time.time() + 2 * HOUR))  # the OTLP turns' hour too
        assert outcomes and all(o.state == "sealed" for o in outcomes)
        delivery = c.deliver(now=from_unix(time.time()))  # the current hour waits for its end
        assert delivery.accepted >= 1 and delivery.rejected == 0 and delivery.failed == 0
    with pytest.raises(AssertionError):
        assert_clean(jsonl.read_bytes(), "the input")  # the scan does find what is there
    written = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "collector.db" for p in written)
    for path in written:
        assert_clean(path.read_bytes(), str(path))


@pytest.mark.slow
def test_otlp_turns_are_redacted_only_when_replay_capture_stores_them(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay set on, storing redacted text, two cases per category: the receiver holds each turn's
    text unredacted beside its event, and only the two stored cases' texts are redacted."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "replay.toml").write_text("[replay_set]\nenabled = true\nstore_redacted_text = true\n"
                                       "per_category_cap = 2\n")
    cfg = CollectorConfig(state_dir=state, tenant_id="acme", cohort="retail", otlp_listen="127.0.0.1:0",
                          resolve_listen="127.0.0.1:0",
                          redaction=RedactionSettings(patterns={"ticket": r"TCK-[0-9]{6}"},
                                                      dictionaries={"customer_name": [PII["name"]]}),
                          loops=LoopConfig(close_interval_seconds=3600, deliver_interval_seconds=3600,
                                           bundle_interval_seconds=3600))
    with Collector(cfg) as c:
        assert c.text_mode() == "defer"
        redacted: list[str] = []
        real = c.redactor.redact

        def redact(text: str) -> str:
            if PII["email"] in text:
                redacted.append(text)
            return real(text)

        monkeypatch.setattr(c.redactor, "redact", redact)
        with serving(c) as running:
            send_otlp_turns(running.otlp_port, 5)
        cases = replay_agent.attached(c).replay_set.cases()
        assert len(cases) == 2 and all(k.text and "<EMAIL>" in k.text for k in cases)
        # Two texts redacted (the stored cases'), three discarded unread: the tool_error cap is 2.
        assert len(redacted) == 2
        status = c.status()
        assert status.counters["events_recorded"] == 5 and status.texts_discarded == 3
        for path in (p for p in state.rglob("*") if p.is_file()):
            assert_clean(path.read_bytes(), str(path))
