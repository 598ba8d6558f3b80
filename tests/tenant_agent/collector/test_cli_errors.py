"""`fedsignal agent` failures are one line and a non-zero exit; the enrollment token stays out of `ps`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsignal_cli.main import main
from server.identity.ca import CertificateAuthority
from tenant_agent.cli import TOKEN_ENV
from tests.harness import start_harness

from .fakes import REPO_ROOT, T0

CONFIG = 'state_dir = "state"\ntenant_id = "tenant-1"\ncohort = "cohort-a"\n'


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedsignal: error:"), err
    assert "Traceback" not in err
    return err


def test_enroll_with_a_missing_ca_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["agent", "enroll", "--server", "127.0.0.1:1", "--token", "t", "--state-dir", str(tmp_path / "s"),
                 "--ca-file", str(tmp_path / "absent.pem")])
    assert code != 0
    assert "cannot read the server CA file" in one_line_error(capsys)


def test_a_ca_file_that_is_not_a_certificate_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    assert main(["agent", "enroll", "--server", "127.0.0.1:1", "--token", "t", "--state-dir", str(tmp_path / "s"),
                 "--ca-file", str(ca)]) != 0
    assert "not a PEM certificate" in one_line_error(capsys)


def test_an_unreachable_server_is_not_called_a_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(CertificateAuthority.create(tmp_path / "ca").certificate_pem)
    code = main(["agent", "enroll", "--server", "127.0.0.1:1", "--token", "t", "--state-dir", str(tmp_path / "s"),
                 "--ca-file", str(ca)])
    assert code != 0
    err = one_line_error(capsys)
    assert "cannot reach the enrollment endpoint 127.0.0.1:2" in err and "refused the request" not in err
    assert "--server port + 1" in err and "--enroll-server" in err
    assert main(["agent", "enroll", "--server", "127.0.0.1:1", "--token", "t", "--state-dir", str(tmp_path / "d"),
                 "--insecure-dev"]) != 0
    assert "cannot reach the enrollment endpoint 127.0.0.1:1" in one_line_error(capsys)


def test_enroll_without_any_token_says_where_to_put_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["agent", "enroll", "--server", "127.0.0.1:1", "--state-dir", str(tmp_path), "--insecure-dev"]) != 0
    assert "--token-file" in one_line_error(capsys)


@pytest.mark.parametrize("source", ["file", "env"])
def test_enroll_takes_the_token_from_a_file_or_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    h = start_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    try:
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(h.ca.certificate_pem)
        state = tmp_path / "collector"
        argv = ["agent", "enroll", "--server", h.mtls_target, "--enroll-server", h.enroll_target,
                "--state-dir", str(state), "--ca-file", str(ca_file)]
        if source == "file":
            token_file = tmp_path / "token"
            token_file.write_text(h.token("acme", "retail") + "\n")
            argv += ["--token-file", str(token_file)]
            monkeypatch.delenv(TOKEN_ENV, raising=False)
        else:
            monkeypatch.setenv(TOKEN_ENV, h.token("acme", "retail"))
        assert main(argv) == 0
        assert "enrolled tenant acme in cohort retail" in capsys.readouterr().out
    finally:
        h.running.stop(0)
        h.ctx.engine.dispose()
    # What enrollment writes is private: 0700 directories, 0600 files.
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert json.loads((state / "credentials" / "identity.json").read_text())["tenant_id"] == "acme"


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    (tmp_path / "collector.toml").write_text(CONFIG)
    assert main(["agent", "status", "--config", str(tmp_path / "collector.toml")]) == 0  # store created
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "fedsignal_cli", "agent", "status", "--config",
                             str(tmp_path / "collector.toml")], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head` that has already gone: every write hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


def test_flush_closes_the_current_window_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "collector.toml").write_text(CONFIG)
    config = str(tmp_path / "collector.toml")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"schema_version": "1", "session_id": "s1", "timestamp": T0 * 2, "intent": "x"})
                      + "\n")  # far in the future: its window is open
    assert main(["agent", "import", "--config", config, str(events)]) == 0
    capsys.readouterr()
    assert main(["agent", "flush", "--config", config]) == 0
    out = capsys.readouterr().out
    # The event's window lies ahead of the wall clock: flush seals what has started, so nothing yet.
    assert "no open window to close" in out
    now_events = tmp_path / "now.jsonl"
    now_events.write_text(json.dumps({"schema_version": "1", "session_id": "s2", "timestamp": time.time(),
                                      "intent": "x"}) + "\n")
    assert main(["agent", "import", "--config", config, str(now_events)]) == 0
    capsys.readouterr()
    assert main(["agent", "flush", "--config", config]) == 0
    out = capsys.readouterr().out
    assert ": sealed (rho" in out and "outbox: 1 waiting (not delivered)" in out
    assert main(["agent", "status", "--config", config]) == 0
    assert "0 sealed" not in capsys.readouterr().out
