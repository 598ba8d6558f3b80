"""The window comes from the cohort's schema; reports the real server refuses for good become visible dead letters."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation.clock import FakeClock, to_unix
from aggregation.schema import SignalSchema
from fedsignal_cli.main import main
from tenant_agent.collector import Collector
from tenant_agent.config import CollectorConfig, ConfigError
from tenant_agent.transport import SCHEMA_FILE, enroll
from tests.harness import Harness

from .fakes import make_config, turn


def test_a_config_window_that_disagrees_with_the_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"window_seconds = 120 disagrees with .* \(3600 s\)"):
        Collector(make_config(tmp_path, window_seconds=120))
    with Collector(make_config(tmp_path, window_seconds=3600)) as c:  # repeating the schema's window is fine
        assert c.schema.window_seconds == 3600


def enrolled(harness: Harness, state: Path, tenant: str) -> CollectorConfig:
    enroll(harness.enroll_target, harness.token(tenant, "retail"), state, harness.ca.certificate_pem,
           signals_address=harness.mtls_target)
    return CollectorConfig(state_dir=state)


def test_a_report_refused_for_good_is_a_dead_letter_with_the_servers_reason(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "collector"
    config = enrolled(harness, state, "acme")
    # A collector whose local schema copy disagrees with the server's about the window (same version):
    # the server refuses every such report with OUT_OF_RANGE, for good.
    schema = SignalSchema.from_json((state / SCHEMA_FILE).read_text())
    (state / SCHEMA_FILE).write_text(dataclasses.replace(schema, window_seconds=120).to_json())
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with Collector(config, clock=FakeClock(now)) as c:
        c.record(turn("s1", to_unix(now - timedelta(minutes=30)) + 1))
        assert [o.state for o in c.close_windows()] == ["sealed"]
        with caplog.at_level(logging.ERROR, logger="tenant_agent.outbox"):
            first = c.deliver()
        assert (first.rejected, first.failed, first.pending) == (1, 0, 0)
        assert any("OUT_OF_RANGE" in r.getMessage() and "dead letters" in r.getMessage() for r in caplog.records)
        again = c.deliver(force=True)  # never retried
        assert (again.accepted, again.failed, again.rejected) == (0, 0, 0)
        status = c.status()
        assert status.outbox_depth == 0 and len(status.dead_letters) == 1
        assert status.dead_letters[0].reason.startswith("OUT_OF_RANGE:") and "120 s long" in status.dead_letters[0].reason
        assert any(e.kind == "release.dead_letter" and "OUT_OF_RANGE" in e.payload_json
                   for e in c.store.audit_entries())
        assert c.verify_audit().ok
    assert main(["agent", "status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "0 waiting, 1 dead letters" in out
    assert "dead:     window" in out and "OUT_OF_RANGE" in out


def test_flush_seals_the_current_window_and_the_server_takes_it_once_it_ends(harness: Harness, tmp_path: Path
                                                                             ) -> None:
    state = tmp_path / "collector"
    config = enrolled(harness, state, "initech")
    # The collector's (fake) clock sits ten minutes into a window that, by the server's wall clock, ended
    # an hour ago: the collector believes it current, the server will take it once the collector sends it.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    clock = FakeClock(start + timedelta(minutes=10))
    with Collector(config, clock=clock) as c:
        c.record(turn("s1", to_unix(start) + 60))
        assert c.close_windows() == []  # the window has not ended: nothing is due
        [outcome] = c.flush()
        assert (outcome.state, outcome.window_start) == ("sealed", int(to_unix(start)))
        held = c.deliver(force=True)  # not sent before the window's end (the server refuses that for good)
        assert (held.accepted, held.rejected, held.pending) == (0, 0, 1)
        clock.set(start + timedelta(hours=1))
        assert c.deliver().accepted == 1
        assert c.status().dead_letters == ()
