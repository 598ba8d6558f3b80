"""Commands against a live server: `fedsignal admin ...` over mTLS, and `fedsignal server serve` under SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from fedsignal_cli.main import main
from server.admin_cli.common import mtls_channel
from server.identity.ca import write_credentials_dir
from tests.harness import Harness

REPO = Path(__file__).resolve().parents[2]


def _admin_dir(h: Harness, tmp_path: Path) -> Path:
    directory = tmp_path / "admin-creds"
    write_credentials_dir(directory, h.admin.key, h.admin.cert, h.ca.certificate_pem,
                          {"subject": "root-admin", "role": "admin"})
    return directory


def test_admin_commands_create_tokens_revoke_and_verify_the_audit_chain(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = ["--server", harness.mtls_target, "--credentials", str(_admin_dir(harness, tmp_path))]
    assert main(["admin", "enroll-token", "--tenant", "acme", "--cohort", "retail", "--json", *conn]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    harness.enroll(token)
    assert main(["admin", "revoke", "--tenant", "acme", "--reason", "test", *conn]) == 0
    assert "1 certificate(s)" in capsys.readouterr().out
    assert main(["admin", "audit", "show", *conn]) == 0
    out = capsys.readouterr().out
    assert "tenant.enrolled" in out and "tenant.revoked" in out
    assert token not in out
    assert out.strip().splitlines()[-1].startswith("audit chain verified")
    assert main(["admin", "revoke", "--tenant", "nobody", "--reason", "x", *conn]) == 3
    assert "NOT_FOUND" in capsys.readouterr().err


def test_admin_commands_need_credentials(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSIGNAL_ADMIN_CREDENTIALS", raising=False)
    assert main(["admin", "audit", "show", "--server", "127.0.0.1:1"]) == 1
    assert "--credentials" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_shuts_down_cleanly_on_sigterm(tmp_path: Path) -> None:
    store = ["--state-dir", str(tmp_path / "state"), "--database-url", f"sqlite:///{tmp_path / 'server.db'}"]
    assert main(["server", "init", *store, "--admin-out", str(tmp_path / "admin")]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsignal_cli", "server", "serve", *store, "--listen", "127.0.0.1:0",
         "--enrollment-listen", "127.0.0.1:0", "--no-jobs"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        port = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{") and json.loads(line).get("msg") == "server started":
                port = json.loads(line)["port"]
                break
        assert port, "server did not start"
        with mtls_channel(f"localhost:{port}", tmp_path / "admin") as ch:
            resp = admin_pb2_grpc.AdminServiceStub(ch).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
        assert [e.kind for e in resp.entries] == ["admin_certificate.issued"]
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(30) == 0
        assert '"msg":"server stopped"' in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
