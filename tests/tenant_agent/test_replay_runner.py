"""The replay runner against a real HTTP agent harness on loopback, and its release through the window path."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from aggregation.clock import from_unix
from aggregation.events import DecisionEvent, ToolCall
from aggregation.rollout_plan import replay_label
from aggregation.schema import default_schema
from server.db import transaction
from server.signals.schemas import publish_artifact_versions
from tenant_agent.collector import Collector
from tenant_agent.replay import ArtifactContent, HarnessClient, ReplayRunner
from tenant_agent.replay_set import ReplaySet, ReplaySetPolicy
from tenant_agent.store import LedgerSpend
from tests.harness import Harness
from tests.tenant_agent.collector.fakes import HOUR, T0, make_config, recent_t0

RID = "ro-test"
SECRET_TEXT = "refund for jane.doe@example.com please"
STABLE = [ArtifactContent("routing.refund", "baseline", b"")]
CANDIDATE = [ArtifactContent("routing.refund", "cand-1", b'{"route": "issue_refund"}')]

Answer = Callable[[dict[str, Any]], tuple[int, bytes]]


def good_harness(doc: dict[str, Any]) -> tuple[int, bytes]:
    """Stable artifacts pick the wrong tool again; the candidate's routing calls the expected one."""
    fixed = any(a.get("content") for a in doc["artifacts"])
    tool = "issue_refund" if fixed else "lookup_order"
    event = {"intent": doc["case"]["intent"], "outcome": "success" if fixed else "failure",
             "tool_calls": [{"name": tool, "expected": "issue_refund"}]}
    return 200, json.dumps({"turn_id": doc["turn_id"], "event": event}).encode()


@contextmanager
def agent_harness(answer: Answer) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(doc)
            status, body = answer(doc)
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/replay", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def failing_case(i: int, t0: float = T0) -> DecisionEvent:
    return DecisionEvent(tenant_id="tenant-1", session_id=f"sess-{i}", timestamp=t0 + i, event_id=f"ev-{i}",
                         intent="refund", outcome="failure", text=SECRET_TEXT,
                         tool_calls=(ToolCall("lookup_order", expected="issue_refund"),))


@pytest.fixture
def schema_with_labels():  # type: ignore[no-untyped-def]
    return LABELLED


LABELLED = default_schema("cohort-a").with_values(
    "artifact_version", ["baseline", replay_label(RID, "stable"), replay_label(RID, "candidate")])


def _collector(tmp_path: Path, now: list[float], channel: Any = None, *, labelled: bool = True) -> Collector:
    c = Collector(make_config(tmp_path / "state"), channel=channel, clock=lambda: from_unix(now[0]), rng=random.Random(3))
    if labelled:
        c.adopt_schema(LABELLED)  # the server publishes a rollout's labels when it starts
    return c


def _replay_set(tmp_path: Path, cases: int = 12, text: bool = True, t0: float = T0) -> ReplaySet:
    rs = ReplaySet(tmp_path / "state", ReplaySetPolicy(enabled=True, store_redacted_text=text), clock=lambda: from_unix(t0))
    rs.capture([failing_case(i, t0) for i in range(cases)])
    return rs


#: Cases of the DP-release test: enough that the released difference cannot drown in the noise.
CASES = 48


def test_replay_fixes_are_scored_locally_and_released_as_dp_slices_that_spend_the_ledger(
        harness: Harness, tmp_path: Path, schema_with_labels) -> None:  # type: ignore[no-untyped-def]
    t0 = recent_t0()
    now = [t0 + 10]
    channel = harness.channel(harness.tenant("tenant-1", "cohort-a"))
    with transaction(harness.ctx.sessions) as session:  # the server publishes a rollout's labels when it starts
        publish_artifact_versions(session, "cohort-a", schema_with_labels.dimension("artifact_version").values[:-1])
    with agent_harness(good_harness) as (url, seen), _collector(tmp_path / "agent", now, channel, labelled=False) as c:
        assert c.refresh_schema()
        assert c.schema.dimensions == schema_with_labels.dimensions
        rs = _replay_set(tmp_path / "agent", cases=CASES, t0=t0)
        run = ReplayRunner(c, rs, HarnessClient(url, c.tenant_id)).run(RID, "cand-1", "wrong_tool", STABLE, CANDIDATE)
        assert (run.status, run.cases) == ("ok", CASES)
        assert run.failing("stable", "wrong_tool") == CASES and run.failing("candidate", "wrong_tool") == 0
        assert (run.correct("stable"), run.correct("candidate")) == (0, CASES)
        assert {d["arm"] for d in seen} == {"stable", "candidate"} and len(seen) == 2 * CASES
        assert seen[0]["case"]["text"] == SECRET_TEXT  # the harness is inside the boundary: it gets the case
        assert run.released == 2 * CASES
        with c.store.engine.connect() as conn:
            spends_before = conn.execute(select(func.count()).select_from(LedgerSpend)).scalar_one()
        now[0] = t0 + HOUR + 1
        sealed = c.close_windows()
        assert [o.state for o in sealed] == ["sealed"] and sealed[0].rho > 0
        with c.store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(LedgerSpend)).scalar_one() == spends_before + 1
        assert c.deliver(force=True).delivered == 1
    channel.close()
    (report,) = harness.reports()
    cells = np.frombuffer(report.cells, dtype="<i8")
    schema = schema_with_labels

    def cell(measure: str, label: str) -> int:
        return int(cells[schema.cell_index({"measure": measure, "intent": "refund", "artifact_version": label})])

    # Noisy (the schema's discrete Gaussian, sd 4 per cell), but the cases show through: with 48 of
    # them the difference of two cells (sd 5.66) misses 48 by 48 with probability ~1e-17 (with 12
    # cases it failed about 1 run in 60).
    assert report.noise_variance == pytest.approx(16.0)
    assert abs(cell("turns", replay_label(RID, "stable")) - CASES) < CASES
    assert cell("wrong_tool", replay_label(RID, "stable")) - cell("wrong_tool", replay_label(RID, "candidate")) > 0
    # Nothing of the replay set itself left: no text, no session id, no artifact content, no case id.
    sent = b"".join(harness.tap.received())
    for secret in (SECRET_TEXT.encode(), b"jane.doe", b"sess-", b"issue_refund", b"case-", RID.encode()[:0] + b"lookup"):
        assert secret not in sent


@pytest.mark.parametrize(("answer", "status"), [
    (lambda doc: (500, b"boom"), "failing"),
    (lambda doc: (200, b"\x00not json at all"), "malformed"),
    (lambda doc: (200, json.dumps({"turn_id": "someone-else", "event": {}}).encode()), "malformed"),
    (lambda doc: (200, json.dumps({"turn_id": doc["turn_id"], "nothing": 1}).encode()), "malformed"),
    (lambda doc: (200, json.dumps({"turn_id": doc["turn_id"], "event": {"latency_ms": "fast"}}).encode()),
     "malformed"),
])
def test_a_broken_harness_gets_a_clear_status_and_releases_nothing(
        tmp_path: Path, answer: Answer, status: str) -> None:
    now = [T0 + 10]
    with agent_harness(answer) as (url, _seen), _collector(tmp_path, now) as c:
        run = ReplayRunner(c, _replay_set(tmp_path, 3), HarnessClient(url, c.tenant_id)).run(
            RID, "cand-1", "wrong_tool", STABLE, CANDIDATE)
        assert (run.status, run.cases, run.released) == (status, 0, 0)
        assert run.errors[status] == 3
        assert c.status().windows["open"] == 0  # no contribution was recorded


def test_a_slow_harness_times_out_per_call(tmp_path: Path) -> None:
    def slow(doc: dict[str, Any]) -> tuple[int, bytes]:
        time.sleep(1.0)
        return good_harness(doc)

    now = [T0 + 10]
    with agent_harness(slow) as (url, _seen), _collector(tmp_path, now) as c:
        run = ReplayRunner(c, _replay_set(tmp_path, 2), HarnessClient(url, c.tenant_id, timeout_seconds=0.2)).run(
            RID, "cand-1", "wrong_tool", STABLE, CANDIDATE)
    assert (run.status, run.cases) == ("slow", 0)


def test_no_harness_or_no_cases_is_a_status_not_an_error(tmp_path: Path) -> None:
    now = [T0 + 10]
    with _collector(tmp_path, now) as c:
        assert ReplayRunner(c, _replay_set(tmp_path, 1), None).run(
            RID, "cand-1", "wrong_tool", STABLE, CANDIDATE).status == "missing"
        with agent_harness(good_harness) as (url, _seen):
            run = ReplayRunner(c, _replay_set(tmp_path, 1), HarnessClient(url, c.tenant_id)).run(
                RID, "cand-1", "timeout", STABLE, CANDIDATE)
        assert run.status == "no_cases"


def test_otlp_spans_are_an_accepted_answer(tmp_path: Path) -> None:
    def otlp(doc: dict[str, Any]) -> tuple[int, bytes]:
        span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "chat",
                "startTimeUnixNano": str(int(T0 * 1e9)), "endTimeUnixNano": str(int((T0 + 1) * 1e9)),
                "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "x"}},
                               {"key": "fedsignal.intent", "value": {"stringValue": "refund"}},
                               {"key": "fedsignal.outcome", "value": {"stringValue": "success"}}]}
        body = {"turn_id": doc["turn_id"],
                "otlp": {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]}}
        return 200, json.dumps(body).encode()

    now = [T0 + 10]
    with agent_harness(otlp) as (url, _seen), _collector(tmp_path, now) as c:
        run = ReplayRunner(c, _replay_set(tmp_path, 2), HarnessClient(url, c.tenant_id)).run(
            RID, "cand-1", "wrong_tool", STABLE, CANDIDATE, release=False)
    assert run.status == "ok" and run.cases == 2


def test_a_schema_without_the_rollouts_labels_is_not_ready_and_calls_no_harness(tmp_path: Path) -> None:
    now = [T0 + 10]
    with agent_harness(good_harness) as (url, seen), _collector(tmp_path, now, labelled=False) as c:
        run = ReplayRunner(c, _replay_set(tmp_path, 2), HarnessClient(url, c.tenant_id)).run(
            RID, "cand-1", "wrong_tool", STABLE, CANDIDATE)
        assert (run.status, run.cases, seen) == ("not_ready", 0, [])


def test_each_case_is_replayed_once_per_rollout_and_new_cases_later(tmp_path: Path) -> None:
    now = [T0 + 10]
    with agent_harness(good_harness) as (url, seen), _collector(tmp_path, now) as c:
        rs = _replay_set(tmp_path, 4)
        runner = ReplayRunner(c, rs, HarnessClient(url, c.tenant_id))
        assert runner.run(RID, "cand-1", "wrong_tool", STABLE, CANDIDATE).cases == 4
        again = runner.run(RID, "cand-1", "wrong_tool", STABLE, CANDIDATE)
        assert (again.status, again.cases) == ("no_cases", 0) and len(seen) == 8
        rs.capture([failing_case(i) for i in range(100, 103)])
        assert runner.run(RID, "cand-1", "wrong_tool", STABLE, CANDIDATE).cases == 3
        assert runner.run("ro-other", "cand-2", "wrong_tool", STABLE, CANDIDATE, release=False).cases == 7
