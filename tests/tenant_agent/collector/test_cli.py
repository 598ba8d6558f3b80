"""`fedsignal agent …` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregation.clock import from_unix
from fedsignal_cli.main import main
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, CollectorConfig, ReleaseConfig
from tests.harness import start_harness

from .fakes import HOUR, REPO_ROOT, T0, make_config, read_line, remaining_lines, turn

CONFIG = """
state_dir = "state"
tenant_id = "tenant-1"
cohort = "cohort-a"
otlp_listen = "127.0.0.1:0"
resolve_listen = "127.0.0.1:0"

[budget]
rho_per_period = 1.0
period_days = 1
lifetime_rho = 5.0

[release]
rho = 0.5
"""


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(CONFIG)
    return path


def test_agent_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    out = capsys.readouterr().out
    for name in ("enroll", "run", "import", "budget", "status"):
        assert name in out


def test_import_reports_bad_lines_and_status_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    lines = [json.dumps({"schema_version": "1", "session_id": f"s{i}", "timestamp": T0 + i, "intent": "refund"})
             for i in range(5)]
    lines.insert(2, '{"schema_version": "1", "timestamp": 5}')
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["agent", "import", "--config", str(config), str(tmp_path / "events.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "line 3:" in out and "session_id" in out
    assert "imported 5 events from 6 lines; 1 bad lines" in out
    assert main(["agent", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 open, 0 sealed, 0 withheld, 0 delivered" in out
    assert "events_recorded = 5" in out and "import_line_errors = 1" in out


def test_budget_shows_spent_remaining_renewal_and_lifetime(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    config = write_config(tmp_path)
    cfg = CollectorConfig.load(config)
    assert cfg.budget == BudgetConfig(rho_per_period=1.0, period_days=1.0, lifetime_rho=5.0)
    assert cfg.release == ReleaseConfig(rho=0.5)
    with Collector(cfg, clock=lambda: from_unix(T0 + 3 * HOUR)) as c:
        c.record_many([turn("s", T0 + h * HOUR + 1) for h in range(3)])
        assert [o.state for o in c.close_windows()] == ["sealed", "sealed", "withheld"]
    # `agent budget` reads the wall clock: the anchor lies in the past, so use
    # the renewal arithmetic of the stored anchor rather than today's date.
    assert main(["agent", "budget", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "rho 1 per period" in out and "1 days" in out
    assert "remaining: rho" in out and "renews at:" in out
    assert "lifetime:  rho 1 spent; rho 4 remaining" in out
    assert main(["agent", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "0 open, 2 sealed, 1 withheld" in out and "audit:    chain verifies" in out


def test_missing_identity_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "status", "--state-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("fedsignal: error:") and "enroll" in err and "Traceback" not in err


def test_enroll_command_against_the_real_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = start_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    try:
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(h.ca.certificate_pem)
        state = tmp_path / "collector"
        code = main(["agent", "enroll", "--server", h.mtls_target, "--enroll-server", h.enroll_target,
                     "--token", h.token("acme", "retail"), "--state-dir", str(state), "--ca-file", str(ca_file)])
        assert code == 0
        assert "enrolled tenant acme in cohort retail" in capsys.readouterr().out
        assert main(["agent", "status", "--state-dir", str(state)]) == 0
        assert "tenant acme (cohort retail)" in capsys.readouterr().out
    finally:
        h.running.stop(0)
        h.ctx.engine.dispose()


@pytest.mark.slow
def test_agent_run_serves_until_sigterm_and_stops_gracefully(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with Collector(make_config(tmp_path / "state")) as c:
        c.record(turn("s", T0 + 1))  # an old window: the close loop seals it
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "fedsignal_cli", "agent", "run", "--config", str(config)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = read_line(proc, "collector ready")
        assert "OTLP on port" in ready and "resolve on port" in ready
        with Collector(CollectorConfig.load(config)) as watcher:
            deadline = time.monotonic() + 60
            while watcher.status().windows["sealed"] == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert "collector stopped" in remaining_lines(proc)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    with Collector(CollectorConfig.load(config)) as c:
        assert c.status().windows["sealed"] == 1
        assert c.status().counters["releases_sealed"] == 1
    assert "sealed window" in (tmp_path / "state" / "logs" / "collector.log").read_text()


@pytest.mark.slow
def test_agent_run_enrolls_itself_from_the_token_in_the_environment(tmp_path: Path) -> None:
    h = start_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    try:
        (tmp_path / "ca.pem").write_bytes(h.ca.certificate_pem)
        config = tmp_path / "collector.toml"
        config.write_text(
            f'state_dir = "state"\nserver = "{h.mtls_target}"\nenroll_server = "{h.enroll_target}"\n'
            'ca_file = "ca.pem"\notlp_listen = "127.0.0.1:0"\nresolve_listen = "127.0.0.1:0"\n'
        )
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FEDSIGNAL_ENROLL_TOKEN=h.token("initech", "retail"))
        proc = subprocess.Popen([sys.executable, "-m", "fedsignal_cli", "agent", "run", "--config", str(config)],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "initech" in read_line(proc, "enrolled tenant")
            read_line(proc, "collector ready")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        identity = json.loads((tmp_path / "state" / "credentials" / "identity.json").read_text())
        assert (identity["tenant_id"], identity["server"]) == ("initech", h.mtls_target)
    finally:
        h.running.stop(0)
        h.ctx.engine.dispose()
