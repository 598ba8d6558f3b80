"""`fedsignal admin cohort mode`: the operator's audited switch between secure and local aggregation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregation.schema import LOCAL, SECURE
from fedsignal_cli.main import main
from server.app import ADMIN, ENROLLMENT, SECAGG, SIGNALS
from server.audit import iter_audit
from server.db import transaction
from server.identity.ca import write_credentials_dir
from server.signals.schemas import current_schema
from tests.harness import Harness, start_harness


@pytest.fixture
def harness(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    """A real server with the SecureAggregationService (it serves the operator's switch)."""
    h = start_harness(database_url, tmp_path / "state", services=[ENROLLMENT, ADMIN, SIGNALS, SECAGG])
    try:
        yield h
    finally:
        h.probe_release.set()
        h.running.stop(0)


def _conn(h: Harness, tmp_path: Path) -> list[str]:
    directory = tmp_path / "admin-creds"
    write_credentials_dir(directory, h.admin.key, h.admin.cert, h.ca.certificate_pem,
                          {"subject": "root-admin", "role": "admin"})
    return ["--server", h.mtls_target, "--credentials", str(directory)]


def test_an_operator_switches_a_cohort_and_every_change_is_audited(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = _conn(harness, tmp_path)
    with transaction(harness.ctx.sessions) as session:
        start = current_schema(session, "fleet")  # a new cohort: secure, with its calibrated noise
    assert start.aggregation_mode == SECURE and start.noise_scale > 0

    assert main(["admin", "cohort", "mode", "fleet", LOCAL, "--reason", "pilot", "--json", *conn]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"cohort": "fleet", "mode": LOCAL, "noise_scale": start.noise_scale,
                   "schema_version": start.version + 1, "changed": True}
    assert main(["admin", "cohort", "mode", "fleet", LOCAL, "--reason", "again", *conn]) == 0
    assert "nothing published" in capsys.readouterr().out
    assert main(["admin", "cohort", "mode", "fleet", SECURE, "--noise-scale", "7.5", "--reason", "back", *conn]) == 0
    assert "secure aggregation from schema version 3" in capsys.readouterr().out

    with transaction(harness.ctx.sessions) as session:
        now = current_schema(session, "fleet")
        entries = [e for e in iter_audit(session) if e.kind == "cohort.aggregation_mode"]
    assert (now.version, now.aggregation_mode, now.noise_scale) == (3, SECURE, 7.5)
    payloads = [json.loads(e.payload_json) for e in entries]
    assert [(p["from_mode"], p["to_mode"], p["reason"]) for p in payloads] == [
        (SECURE, LOCAL, "pilot"), (LOCAL, SECURE, "back")]
    assert all(e.actor == "root-admin" for e in entries)


def test_unknown_cohorts_modes_and_scales_are_refused(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = _conn(harness, tmp_path)
    assert main(["admin", "cohort", "mode", "nobody", LOCAL, "--reason", "x", *conn]) == 3
    assert "NOT_FOUND" in capsys.readouterr().err
    with transaction(harness.ctx.sessions) as session:
        current_schema(session, "fleet")
    assert main(["admin", "cohort", "mode", "fleet", LOCAL, "--noise-scale", "-1", "--reason", "x", *conn]) == 3
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["admin", "cohort", "mode", "fleet", "central", "--reason", "x", *conn])
