"""Collector throughput figures (prints numbers, asserts nothing).

    .venv/bin/python -m bench.collector [--events 20000] [--turns 400] [--texts 6000]

1. events/s for redact + classify + aggregate on a realistic mix (30 % of the
   events carry free text with PII), single process, through
   ``Collector.record_many`` (JSON documents → redacted events → taxonomy →
   bounded window table in SQLite, durable when the call returns); the
   in-memory redact + classify part alone is printed for reference.
2. OTLP spans/s the receiver decodes and maps, from pre-encoded
   ``ExportTraceServiceRequest`` bytes made by the real SDK's encoder, next to
   a plain receiver that converts every attribute of every span (alone, and
   followed by the same turn mapping, which is the like-for-like comparison).
3. redacted texts/s on 300-character texts (30 % with PII, and all-PII).

Every figure is the best of ``--repeat`` runs, by wall clock and by CPU time.

``--baseline DIR`` measures ``record_many`` again with the code of another
checkout (``git worktree add --detach DIR <commit before the change>``), in a
subprocess right after this one, with redaction and with the redactor stubbed
out (bench only: it shows the record path's own cost). ``--replicas N
--database-url postgresql://...`` prints the combined rate of N collector
processes recording into one PostgreSQL store (a fresh schema, dropped after).

Where the time of ``record_many`` went (pyinstrument and cProfile, 20,000
events, 30 % with PII; main at 94207de): parsing + redaction of the JSON
documents ~50 % (redaction alone ~22 %), taxonomy classification ~14 %,
building the per-contribution rows ~13 %, the SQLite upsert per contribution
~7 %. After the batch log (one packed row per batch and window, folded at
sealing with numpy), the store write is ~2 % and the record path is Python
per event: ``event_from_dict`` ~45 % (tool calls, evaluations, the field
loops), classification ~20 % (``aggregation/taxonomy.py``), the cyclic GC
15-25 % (2,000 live events per batch), hashing and summing ~10 %.

Then (main at 550c65e, redaction real): ``event_from_dict`` 67 % of which the
redaction of the 300-character texts 33 %, classification 17 % (~25 closure
calls per event), the record loop 13 %; the cyclic GC on top (pyinstrument
does not see it; toggling it moved the stubbed rate by 15-40 %). Changed:
no cyclic GC while a batch is recorded (its events form no cycles), one
generated function per taxonomy instead of the closures (2.5x faster),
events built in place and plain tool calls remembered per redactor in
``event_from_dict``, the record loop reading its caches inline. After, with
redaction stubbed (cProfile): ``event_from_dict`` ~50 % (its own body ~20 %,
tool calls ~9 %, evaluations ~6 %), classification ~13 %, the record loop and
packing ~12 %, SQLite ~1 %; with redaction real, redacting the texts is
~60 % of ``record_many`` (``tenant_agent/redaction``).

Then (main at 9d1330a, issue 14; cProfile and line_profiler, cold store per run as
here): ``event_from_dict`` ~45 % of the stubbed rate (its own body, the tool calls
with a weak-reference lookup per event, evaluations, the session id through three
calls), ``WindowBook.record`` ~55 % (classification ~25 % of it, then new
combinations of measures on a known slice rebuilt as JSON, the keyed BLAKE2b per
new unit, ``_pack`` setting its rows element by element). Changed: the usual field
values read inline in ``event_from_dict`` (the general helpers still run for any
other value, at the same point), cell keys remembered per (slice, measure), MACs
from a copy of the keyed state, ``_pack`` by columns. Measured in one process,
old and new code alternately (CPU time, best of 25 / 10 runs; the box was shared):
``event_from_dict`` 1.13-1.14x, ``WindowBook.record`` 1.11-1.31x; ``record_many``
against 9d1330a with ``--baseline``: 1.10x with redaction, 1.27x stubbed. With redaction real, redacting the 300-character texts stays over half of
``record_many``, so its rate cannot reach 50,000 events/s while redaction costs
what it does (~0.5 s per 20,000 events here, all of them 30 % with PII texts).

OTLP (same commit): reading the attributes of a span (iterating the upb repeated
field, ``kv.key``, the value) ~45 %, the turn mapping ~40 %; ``Slot.X`` on an
IntEnum takes EnumType's slow attribute path on Python 3.11 (~170 ns, dozens per
turn). Changed: slots as module globals, one pass over the attributes, the flag
scan skipped for spans without flags: 1.05-1.26x spans/s (interleaved runs, best of each).

Then (main at 59bfc5d; the bench's payload timed in parts, best of 15): decode 0.7 us a span,
``read_span`` 6.7 us (iterating the attributes and reading key, value and string, with no
logic at all, is 4.4 us of it: one upb wrapper per KeyValue and per AnyValue), turn assembly
3.0 us, ``map_traces``' own bookkeeping ~1 us; 11.4 us in all (~88,000 spans/s). Changed: turn
assembly reads the merged view's labels, versions and flags inline (3.0 -> 2.9 us a span); the
trace service parses requests into ``fedsignal/v1/otlp_view.proto``, the same bytes with every
attribute list a ``map<string, AnyValue>`` that upb fills in C, so ``read_span`` intersects the
span's keys with the allow-list and never wraps the other attributes (read 5.7 -> 5.1 us a span,
decode 0.6 -> 0.9 us); string items of arrays read without ``WhichOneof``. The receiver row
below decodes into that view, as the gRPC service does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from aggregation.taxonomy import Taxonomy
from tenant_agent.ingest import otel_attrs
from tenant_agent.ingest import spans as spans_module
from tenant_agent.ingest.otlp import OtlpMapper, parse_traces
from tenant_agent.ingest.records import event_from_dict
from tenant_agent.ingest.spans import SpanView, any_value
from tenant_agent.redact import Redactor

INTENTS = [
    "billing",
    "refund",
    "order_status",
    "tech_support",
    "account",
    "shipping",
    "cancellation",
    "warranty",
]
TOOLS = ["lookup_order", "refund_order", "search_kb", "update_address", "create_ticket"]
FILLER = (
    "The customer asked about the refund for their last order and whether the shipping fee is included; "
    "the agent checked the policy, looked up the order history and explained the next steps and timelines "
    "for the request, then offered to open a ticket with the billing team if anything else is needed today. "
)


def pii_sentence(rng: random.Random) -> str:
    return rng.choice(
        [
            f"Reach me at {rng.choice(['jane.roe', 'omar_h', 'li.wei'])}@example.org or +44 20 7946 {rng.randrange(1000, 9999)}. ",
            f"Card 4111 1111 1111 1111 expires soon, born {rng.randrange(1, 28)} March 19{rng.randrange(50, 99)}. ",
            f"IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-{rng.randrange(1000, 9999)}, from 10.1.{rng.randrange(255)}.7. ",
            f"See https://portal.example.com/orders/{rng.randrange(10**6)} with key sk-proj-{'x' * 32}. ",
        ]
    )


def text_300(rng: random.Random, with_pii: bool) -> str:
    start = rng.randrange(0, 120)
    body = (pii_sentence(rng) + FILLER) if with_pii else FILLER[start:] + FILLER
    return body[:300]


def event_docs(n: int, rng: random.Random, t0: float) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        doc: dict[str, Any] = {
            "schema_version": "1",
            "session_id": f"sess-{rng.randrange(n // 3 + 1)}",
            "timestamp": t0 + i * 0.05,
            "intent": rng.choice(INTENTS),
            "agent": "support",
            "model": "gpt-4o",
            "artifact_version": rng.choice(["baseline", "baseline", "cand-7"]),
            "tool_calls": [
                {
                    "name": rng.choice(TOOLS),
                    "error": "timeout" if rng.random() < 0.05 else None,
                    "expected": rng.choice(TOOLS) if rng.random() < 0.1 else None,
                }
            ],
            "retrieval_ids": ["kb-1", "kb-2"] if rng.random() < 0.5 else [],
            "retrieval_empty": rng.random() < 0.05,
            "escalated": rng.random() < 0.03,
            "human_edited": rng.random() < 0.05,
            "user_reasked": rng.random() < 0.05,
            "outcome": "success" if rng.random() < 0.8 else "failure",
            "evaluations": {"groundedness": round(rng.random(), 2)},
            "latency_ms": rng.uniform(200, 4000),
        }
        if rng.random() < 0.3:
            doc["text"] = text_300(rng, with_pii=True)
        docs.append(doc)
    return docs


def best_rate(count: int, run: Callable[[], object], repeat: int) -> str:
    """Best of ``repeat`` runs, by wall clock and by this process's CPU time (the
    latter is steadier when other jobs share the cores)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return f"{count / wall:>10,.0f}/s wall {count / max(cpu, 1e-9):>10,.0f}/s cpu"


# -- 1. redact + classify + aggregate ----------------------------------------------


def _fixed_clock(t0: float) -> Callable[[], Any]:
    """The collector's clock at ``t0``; a float clock for a baseline checkout from before ``aggregation.clock``."""
    try:
        from aggregation.clock import from_unix
    except ImportError:
        return lambda: t0
    moment = from_unix(t0)
    return lambda: moment


def _stub_redaction(redactor: Any) -> None:
    """Bench only: make the redactor the identity, to show the record path's own cost."""
    redactor.redact = lambda text: text
    redactor.redact_label = lambda value: value


#: How record_many treats the free texts: ``discard`` is the collector's own decision with no
#: consumer of text (replay capture off, the shipped taxonomy): texts are dropped unread;
#: ``replay`` is its decision with the replay set on and storing redacted text (``replay.toml``
#: with the default caps): capture classifies every turn and redacts the texts of the cases it
#: stores, and only those; ``keep`` forces every text redacted on arrival (what a taxonomy rule on
#: ``text`` makes it do; the work the code before data minimization always did); ``stub`` keeps
#: them with the redactor stubbed out (bench only: the record path's own cost).
TEXT_MODES = ("discard", "replay", "keep", "stub")


def record_many_rates(n: int, repeat: int, *, mode: str) -> tuple[float, float, bool]:
    """Best events/s (wall, cpu) of ``Collector.record_many`` in batches of 2,000 on a fresh store,
    and whether this code decides on free text at all (code before it always redacts)."""
    from tenant_agent.collector import Collector
    from tenant_agent.config import CollectorConfig

    rng = random.Random(7)
    t0 = 1_764_000_000.0
    docs = event_docs(n, rng, t0)
    batch = 2000
    wall = cpu = float("inf")
    decides = False
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            if mode == "replay":
                (Path(tmp) / "replay.toml").write_text("[replay_set]\nenabled = true\nstore_redacted_text = true\n")
            config = CollectorConfig(state_dir=Path(tmp), tenant_id="tenant-a", cohort="cohort-a")
            with Collector(config, clock=_fixed_clock(t0)) as collector:
                decides = hasattr(collector, "keeps_text")
                if mode == "stub":
                    _stub_redaction(collector.redactor)
                if mode in ("keep", "stub") and decides:  # bench only: every text redacted on arrival
                    if hasattr(collector, "text_mode"):
                        collector.text_mode = lambda: "redact"  # type: ignore[method-assign]
                    else:  # code before the deferred mode
                        collector.keeps_text = lambda: True  # type: ignore[method-assign]
                if mode == "discard" and decides and collector.keeps_text():
                    raise SystemExit("the collector keeps free text here: the discard mode measures nothing")
                if mode == "replay" and getattr(collector, "text_mode", lambda: "defer")() != "defer":
                    raise SystemExit("the replay set does not defer redaction here: the replay mode measures nothing")
                started, started_cpu = time.perf_counter(), time.process_time()
                for i in range(0, n, batch):
                    collector.record_many(docs[i : i + batch])
                wall = min(wall, time.perf_counter() - started)
                cpu = min(cpu, time.process_time() - started_cpu)
    return n / wall, n / max(cpu, 1e-9), decides


def _rates(wall: float, cpu: float) -> str:
    return f"{wall:>10,.0f}/s wall {cpu:>10,.0f}/s cpu"


def _tree_rates(tree: Path, n: int, repeat: int, mode: str) -> tuple[float, float, bool]:
    """The measurement in a subprocess with the collector code of ``tree`` (``git worktree``)."""
    env = dict(os.environ, PYTHONPATH=f"{tree / 'proto'}{os.pathsep}{tree}")
    args = [sys.executable, __file__, "--record-only", "--events", str(n), "--repeat", str(repeat), "--mode", mode]
    out = subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    if Path(doc["tenant_agent"]).resolve().parent != tree.resolve():
        raise SystemExit(f"the run for {tree} imported {doc['tenant_agent']}, not {tree}")
    return float(doc["wall"]), float(doc["cpu"]), bool(doc["decides_text"])


_MODE_LABELS = {
    "discard": "capture off (text discarded)",
    "replay": "replay capture stores redacted text",
    "keep": "every text redacted on arrival",
    "stub": "redaction stubbed out (bench only)",
}


def bench_events(n: int, repeat: int, baseline: Path | None, rounds: int) -> None:
    rng = random.Random(7)
    t0 = 1_764_000_000.0
    docs = event_docs(n, rng, t0)
    taxonomy = Taxonomy.load()

    def in_memory() -> None:
        redactor = Redactor()
        for doc in docs:
            taxonomy.classify(event_from_dict(doc, "tenant-a", redactor))

    print(f"events, redact+classify (in memory, no store)    {best_rate(n, in_memory, repeat)}")
    if baseline is None:
        for mode in TEXT_MODES:
            wall, cpu, _ = record_many_rates(n, repeat, mode=mode)
            print(f"events, record_many, {_MODE_LABELS[mode]:<36}  {_rates(wall, cpu)}")
        return
    # Old and new code alternately, each in its own subprocess (old, new, old, new, ...), best of each.
    here = Path(__file__).resolve().parents[1]
    best: dict[tuple[str, str], tuple[float, float]] = {}
    old_decides = False
    for r in range(rounds):
        for mode in ("keep", "replay", "discard", "stub"):
            for which, tree in (("old", baseline), ("new", here)):
                if which == "old" and mode in ("discard", "replay"):
                    continue  # the old code has one text mode (it always redacts): measured as "keep"
                wall, cpu, decides = _tree_rates(tree, n, repeat, mode)
                if which == "old":
                    old_decides = decides
                print(f"  round {r + 1}: {which} {_MODE_LABELS[mode]:<36} {_rates(wall, cpu)}", flush=True)
                prev = best.get((which, mode), (0.0, 0.0))
                best[(which, mode)] = (max(prev[0], wall), max(prev[1], cpu))
    old_note = "decides on text too" if old_decides else "always redacts"
    for mode in TEXT_MODES:
        new = best[("new", mode)]
        print(f"events, record_many, {_MODE_LABELS[mode]:<36}  {_rates(*new)}")
        old_mode = "stub" if mode == "stub" else "keep"
        old = best[("old", old_mode)]
        print(f"  code of {baseline} ({old_note}), {_MODE_LABELS[old_mode]:<22} {_rates(*old)}")
        print(f"  speed-up: {new[0] / old[0]:.2f}x wall, {new[1] / old[1]:.2f}x cpu")


def _replica_worker(url: str, replica: int, replicas: int, n: int, go: Path) -> None:
    """One replica of ``--replicas``: records its share of the events, prints its elapsed time."""
    from tenant_agent.collector import Collector
    from tenant_agent.config import CollectorConfig

    t0 = 1_764_000_000.0
    docs = event_docs(n, random.Random(7), t0)
    batch = 2000
    mine = [docs[i : i + batch] for i in range(0, n, batch)][replica::replicas]
    with tempfile.TemporaryDirectory() as tmp:
        config = CollectorConfig(state_dir=Path(tmp), tenant_id="tenant-a", cohort="cohort-a", store_url=url)
        with Collector(config, clock=_fixed_clock(t0)) as collector:
            print("ready", flush=True)
            while not go.exists():
                time.sleep(0.001)
            started = time.time()
            for chunk in mine:
                collector.record_many(chunk)
            print(json.dumps({"start": started, "end": time.time(), "events": sum(len(c) for c in mine)}), flush=True)


def bench_replicas(url: str, replicas: int, n: int) -> None:
    """Combined record_many rate of ``replicas`` processes on one PostgreSQL store (a fresh schema)."""
    import uuid
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(sa_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    store_url = url + f"{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            go = Path(tmp) / "go"
            # The first process creates the store; the others find it.
            procs = []
            for i in range(replicas):
                args = [sys.executable, __file__, "--replica-worker", str(i), "--replicas", str(replicas),
                        "--database-url", store_url, "--events", str(n), "--go", str(go)]
                procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True))
                pipe = procs[-1].stdout
                if pipe is None or pipe.readline().strip() != "ready":
                    raise SystemExit("a replica did not start")
            go.touch()
            results = []
            for p in procs:
                out, _ = p.communicate(timeout=600)
                results.append(json.loads(out.strip().splitlines()[-1]))
        events = sum(r["events"] for r in results)
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        print(f"events, record_many, {replicas} replicas on one PostgreSQL store {events / wall:>10,.0f}/s wall "
              f"(combined, {events} events)")
        for i, r in enumerate(results):
            print(f"  replica {i}: {r['events'] / (r['end'] - r['start']):>10,.0f}/s")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- 2. OTLP decode + map ------------------------------------------------------------


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def sdk_requests(turns: int, per_request: int) -> tuple[list[bytes], int]:
    """Pre-encoded export requests of agent turns recorded with the real SDK."""
    rng = random.Random(11)
    keep = _Keep()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-agent", "fedsignal.bundle.version": "b-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("bench")
    prompt = (FILLER * 8)[:2000]
    for i in range(turns):
        with tracer.start_as_current_span(
            "invoke_agent support",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "support",
                "gen_ai.agent.id": "agent-1",
                "gen_ai.conversation.id": f"conv-{i // 3}",
                "user.id": f"user-{i % 97}",
                "fedsignal.intent": rng.choice(INTENTS),
                "fedsignal.artifact.version": "baseline",
                "gen_ai.provider.name": "openai",
                "server.address": "api.example.com",
            },
        ):
            for _ in range(2):
                with tracer.start_as_current_span(
                    "chat gpt-4o",
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.response.model": "gpt-4o-2024-08-06",
                        "gen_ai.request.temperature": 0.2,
                        "gen_ai.request.max_tokens": 800,
                        "gen_ai.response.id": f"resp-{rng.randrange(10**9)}",
                        "gen_ai.usage.input_tokens": rng.randrange(100, 2000),
                        "gen_ai.usage.output_tokens": rng.randrange(10, 400),
                        "gen_ai.response.finish_reasons": ["stop"],
                        "gen_ai.input.messages": prompt,
                        "gen_ai.output.messages": prompt[:600],
                        "server.address": "api.example.com",
                        "server.port": 443,
                    },
                ):
                    pass
            with tracer.start_as_current_span(
                "execute_tool lookup_order",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": rng.choice(TOOLS),
                    "gen_ai.tool.call.id": f"call-{i}",
                    "gen_ai.tool.type": "function",
                    "gen_ai.tool.call.arguments": '{"order_id": "12345678", "include_history": true}',
                    "gen_ai.tool.call.result": prompt[:400],
                },
            ) as tool:
                if rng.random() < 0.05:
                    tool.set_attribute("error.type", "timeout")
                    tool.set_status(Status(StatusCode.ERROR))
            with tracer.start_as_current_span(
                "retrieve kb",
                attributes={
                    "openinference.span.kind": "RETRIEVER",
                    "input.value": prompt[:300],
                    **{f"retrieval.documents.{d}.document.id": f"kb-{d}" for d in range(3)},
                    **{f"retrieval.documents.{d}.document.content": prompt[:500] for d in range(3)},
                    **{f"retrieval.documents.{d}.document.score": 0.5 for d in range(3)},
                },
            ):
                pass
    provider.shutdown()
    spans = keep.spans
    requests = []
    # Export batches as the BatchSpanProcessor would cut them: whole turns here.
    per_turn = len(spans) // turns
    step = per_request * per_turn
    for i in range(0, len(spans), step):
        requests.append(encode_spans(spans[i : i + step]).SerializeToString())
    return requests, len(spans)


def naive_receiver(payloads: list[bytes]) -> int:
    """Decode and convert every attribute of every span to Python, grouped by trace."""
    traces: dict[bytes, list[dict[str, Any]]] = {}
    count = 0
    for payload in payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs = {kv.key: any_value(kv.value) for kv in span.attributes}
                    traces.setdefault(span.trace_id, []).append(
                        {
                            "span_id": span.span_id,
                            "parent": span.parent_span_id,
                            "name": span.name,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attributes": attrs,
                            "resource": resource,
                        }
                    )
                    count += 1
    return count


def read_everything(span: Any, resource: dict[Any, Any]) -> SpanView:
    """A plain receiver's span read: convert every attribute, then pick what the
    mapping needs from the resulting dict (same SpanView as the allow-list read)."""
    attrs = {key: any_value(value) for key, value in span.attributes.items()}  # the view's attribute map
    table = otel_attrs.SPAN_ATTRIBUTES
    values = {table[k]: v for k, v in attrs.items() if k in table and v is not None}
    role = spans_module._role(values)
    documents = sorted(
        (int(k.split(".")[2]), str(v))
        for k, v in attrs.items()
        if k.startswith("retrieval.documents.") and k.endswith(".document.id")
    ) or None
    parent = span.parent_span_id
    return SpanView(
        span.trace_id,
        span.span_id,
        parent,
        not parent,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code == 2,
        values,
        resource,
        documents,
        None,
        role,
    )


class NaiveMapper(OtlpMapper):
    read_span = staticmethod(read_everything)


def bench_otlp(turns: int, repeat: int) -> None:
    payloads, spans = sdk_requests(turns, per_request=50)
    size = sum(len(p) for p in payloads)
    print(f"OTLP payload: {spans} spans in {len(payloads)} requests, {size / spans:,.0f} bytes/span")

    mapped: list[int] = []

    def ours() -> None:  # what the gRPC receiver does: parse the bytes into the view, map
        mapper = OtlpMapper("tenant-a", Redactor())
        events = 0
        for payload in payloads:
            events += len(mapper.map_traces(parse_traces(payload)))
        mapped.append(events)

    def decode_only() -> None:
        for payload in payloads:
            ExportTraceServiceRequest.FromString(payload)

    def view_decode_only() -> None:
        for payload in payloads:
            parse_traces(payload)

    def naive_mapped() -> None:
        mapper = NaiveMapper("tenant-a", Redactor())
        for payload in payloads:
            mapper.map_traces(parse_traces(payload))

    naive = best_rate(spans, lambda: naive_receiver(payloads), repeat)
    naive_full = best_rate(spans, naive_mapped, repeat)
    print(f"spans, OTLP decode only (reference)              {best_rate(spans, decode_only, repeat)}")
    print(f"spans, OTLP decode into the receiver's view      {best_rate(spans, view_decode_only, repeat)}")
    print(f"spans, OTLP naive walk, no mapping (reference)   {naive}")
    print(f"spans, OTLP naive walk + same turn mapping       {naive_full}")
    print(f"spans, OTLP fedsignal receiver (decode + map)    {best_rate(spans, ours, repeat)}")
    print(f"  (decision events per run: {mapped[-1]} for {turns} turns)")


# -- 3. redaction ---------------------------------------------------------------------


def bench_redaction(n: int, repeat: int) -> None:
    rng = random.Random(3)
    mixed = [text_300(rng, with_pii=rng.random() < 0.3) for _ in range(n)]
    all_pii = [text_300(rng, with_pii=True) for _ in range(n)]
    redactor = Redactor()
    rate_mixed = best_rate(n, lambda: [redactor.redact(t) for t in mixed], repeat)
    rate_pii = best_rate(n, lambda: [redactor.redact(t) for t in all_pii], repeat)
    print(f"texts, redaction, 300 chars, 30% with PII        {rate_mixed}")
    print(f"texts, redaction, 300 chars, all with PII        {rate_pii}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--texts", type=int, default=6_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of the code before the change (git worktree add --detach DIR COMMIT): "
                             "record_many is measured with it too, back to back")
    parser.add_argument("--replicas", type=int, default=0,
                        help="also measure N collector processes recording into one PostgreSQL store")
    parser.add_argument("--database-url", default=None, help="postgresql://... for --replicas")
    parser.add_argument("--replica-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--go", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --baseline: old and new code alternately this many times (default 2)")
    parser.add_argument("--record-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=TEXT_MODES, default="discard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica_worker is not None:
        _replica_worker(args.database_url, args.replica_worker, args.replicas, args.events, args.go)
        return
    if args.replicas and not args.database_url:
        parser.error("--replicas needs --database-url postgresql://...")
    if args.record_only:
        import tenant_agent

        wall, cpu, decides = record_many_rates(args.events, args.repeat, mode=args.mode)
        print(json.dumps({"wall": wall, "cpu": cpu, "decides_text": decides,
                          "tenant_agent": str(Path(tenant_agent.__file__).parent)}))
        return
    bench_events(args.events, args.repeat, args.baseline, args.rounds)
    if args.replicas:
        bench_replicas(args.database_url, 1, args.events)
        bench_replicas(args.database_url, args.replicas, args.events)
    bench_otlp(args.turns, args.repeat)
    bench_redaction(args.texts, args.repeat)


if __name__ == "__main__":
    main()
