"""Outbox delivery: exactly once through outages, crashes and retries (the real server: gRPC, mTLS, its store)."""

from __future__ import annotations

import dataclasses
import random
import signal
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import signals_pb2
from sqlalchemy import select

from aggregation.clock import FakeClock, from_unix, to_unix
from server.db import transaction
from server.signals.models import SignalReport
from server.signals.schemas import publish_artifact_versions
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, CollectorConfig, DeliveryConfig
from tenant_agent.outbox import SUBMIT_METHOD, backoff_delay
from tenant_agent.store import Release
from tenant_agent.transport import enroll
from tests.harness import FAST_RECONNECT, Harness

from .fakes import HOUR, T0, make_config, read_line, recent_t0, spawn_worker, turn


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    cfg = DeliveryConfig(backoff_base_seconds=10, backoff_cap_seconds=100)
    assert [backoff_delay(n, cfg, FixedRandom(1.0)) for n in range(1, 6)] == [10, 20, 40, 80, 100]
    assert backoff_delay(3, cfg, FixedRandom(0.0)) == 20  # jitter spans [d/2, d]
    draws = {backoff_delay(2, cfg, random.Random(seed)) for seed in range(20)}
    assert len(draws) > 1 and all(10 <= d <= 20 for d in draws)


def test_server_down_for_a_simulated_day_every_window_arrives_exactly_once(harness: Harness, tmp_path: Path) -> None:
    t0 = recent_t0()
    now = [t0]
    channel = harness.channel(harness.tenant("tenant-1", "cohort-a"), options=FAST_RECONNECT)
    cfg = make_config(tmp_path / "collector", budget=BudgetConfig(rho_per_period=100.0))
    with Collector(cfg, channel=channel, clock=lambda: from_unix(now[0]), rng=random.Random(7)) as c:
        assert c.refresh_schema()  # the cohort's schema, fetched before the outage
        harness.stop_server()
        for hour in range(24):
            now[0] = t0 + hour * HOUR
            c.record_many([turn(f"s{hour}-{i}", now[0] + i, tool_error=i % 4 == 0) for i in range(10)])
            c.close_windows()
            result = c.deliver()
            assert result.delivered == 0
        assert c.status().windows["sealed"] == 23  # the current hour is still open
        assert c.status().outbox_depth == 23
        assert harness.tap.received() == []
        # The server comes back (a new instance, same address and store); the collector keeps going
        # on its own schedule.
        harness.start_server()
        grpc.channel_ready_future(channel).result(timeout=30)
        for step in range(40):
            now[0] = t0 + 24 * HOUR + step * 30 * 60
            c.close_windows()
            if c.deliver().pending == 0 and c.status().windows["open"] == 0:
                break
        status = c.status()
        assert status.outbox_depth == 0
        assert status.windows["delivered"] == 24
    channel.close()
    stored = harness.reports()
    assert len(stored) == 24
    assert len(harness.tap.received()) == 24  # nothing was sent twice
    starts = sorted(r.window_start for r in stored)
    assert starts == [int(t0 + h * HOUR) for h in range(24)]


def test_nothing_listening_is_retried_with_backoff(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    cfg = make_config(tmp_path, delivery=DeliveryConfig(backoff_base_seconds=60, backoff_cap_seconds=600,
                                                        rpc_timeout_seconds=2))
    with Collector(cfg, channel=channel, rng=FixedRandom(1.0)) as c:
        c.record(turn("s", T0 + 1))
        c.close_windows(now=from_unix(T0 + HOUR))
        first = c.deliver(now=from_unix(T0 + HOUR))
        assert (first.failed, first.pending, first.next_attempt_at) == (1, 1, T0 + HOUR + 60)
        # Not due yet: no attempt.
        assert c.deliver(now=from_unix(T0 + HOUR + 30)).failed == 0
        second = c.deliver(now=from_unix(T0 + HOUR + 60))
        assert second.next_attempt_at == T0 + HOUR + 60 + 120
    channel.close()


def test_duplicate_answer_counts_as_delivered(harness: Harness, tmp_path: Path) -> None:
    state = tmp_path / "collector"
    enroll(harness.enroll_target, harness.token("acme", "retail"), state, harness.ca.certificate_pem,
           signals_address=harness.mtls_target)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    with Collector(CollectorConfig(state_dir=state), clock=FakeClock(hour + timedelta(hours=1))) as c:
        c.record(dataclasses.replace(turn("s", to_unix(hour) + 1), tenant_id="acme"))
        c.close_windows()
        with c.store.engine.connect() as conn:
            data = conn.execute(select(Release.report)).scalar_one()
        # The server already holds it (e.g. our reply got lost last time): the same bytes, sent directly.
        channel = c.channel()
        assert channel is not None
        submit = channel.unary_unary(SUBMIT_METHOD, None, signals_pb2.SubmitReportResponse.FromString)
        assert submit(data, timeout=10).outcome == signals_pb2.SubmitReportResponse.ACCEPTED
        result = c.deliver()
        assert (result.accepted, result.duplicates, result.pending) == (0, 1, 0)
        assert c.status().windows["delivered"] == 1
    with harness.ctx.engine.connect() as conn:
        assert len(conn.execute(select(SignalReport.id).where(SignalReport.tenant_id == "acme")).all()) == 1


@pytest.mark.slow
def test_killed_after_the_server_stored_but_before_the_ack_counts_once(harness: Harness, tmp_path: Path) -> None:
    t0, state = recent_t0(), tmp_path / "collector"
    harness.enroll_collector(state)
    with Collector(make_config(state)) as c:
        c.record_many([turn(f"s{i}", t0 + i) for i in range(5)])
        c.close_windows(now=from_unix(t0 + HOUR))
    # The server stores the report, then holds its reply open.
    held = harness.tap.hold()
    proc = spawn_worker("deliver_hang", str(state), str(t0))
    try:
        read_line(proc, "delivering")
        assert held.arrived.wait(30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        held.release.set()
        if proc.poll() is None:
            proc.kill()
    with Collector(make_config(state)) as c:
        assert c.status().outbox_depth == 1  # the ack never reached the store
        result = c.deliver(now=from_unix(t0 + HOUR), force=True)
        assert (result.duplicates, result.pending) == (1, 0)
    assert len(harness.reports()) == 1
    received = harness.tap.received()
    assert len(received) == 2 and received[0] == received[1]


def test_close_adopts_the_servers_newer_schema_and_releases_with_it(harness: Harness, tmp_path: Path) -> None:
    state = tmp_path / "collector"
    enroll(harness.enroll_target, harness.token("acme", "retail"), state, harness.ca.certificate_pem,
           signals_address=harness.mtls_target)
    with transaction(harness.ctx.sessions) as session:  # a rollout publishes a new artifact-version label
        v2 = publish_artifact_versions(session, "retail", ["cand-1"])
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    with Collector(CollectorConfig(state_dir=state), clock=FakeClock(hour + timedelta(hours=1))) as c:
        assert c.schema.version == v2.version - 1  # the schema of the enrollment
        assert c.refresh_schema() and c.schema.version == v2.version
        start = to_unix(hour)
        c.record_many([dataclasses.replace(turn("s1", start + 1, artifact_version="cand-1"), tenant_id="acme"),
                       dataclasses.replace(turn("s2", start + 2), tenant_id="acme")])
        c.close_windows()
        assert c.deliver().accepted == 1
        # An older schema never replaces a newer local one.
        c.adopt_schema(dataclasses.replace(v2, version=v2.version - 1))
        assert c.schema.version == v2.version
    with harness.ctx.engine.connect() as conn:
        [(schema_version, window_start)] = conn.execute(
            select(SignalReport.schema_version, SignalReport.window_start).where(SignalReport.tenant_id == "acme")
        ).all()
    assert (schema_version, window_start) == (v2.version, int(start))
    with Collector(CollectorConfig(state_dir=state)) as restarted:
        assert restarted.schema.version == v2.version  # persisted
