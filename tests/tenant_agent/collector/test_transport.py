"""Enrollment and mutual TLS against the real server (CA, EnrollmentService, SignalService)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedsignal.v1 import signals_pb2
from sqlalchemy import select

from aggregation.clock import from_unix
from aggregation.schema import SignalSchema
from server.app import BUNDLES
from tenant_agent.collector import Collector
from tenant_agent.config import CollectorConfig
from tenant_agent.outbox import SUBMIT_METHOD
from tenant_agent.store import Release
from tenant_agent.transport import TransportError, enroll, open_channel
from tests.bundle_factory import World
from tests.harness import CORE_SERVICES, Credentials, Harness, running_harness

from .fakes import T0, turn

HOUR = 3600


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Harness]:
    with running_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server") as h:
        yield h
        h.ctx.engine.dispose()


def test_enrollment_writes_credentials_trust_root_and_schema(server: Harness, tmp_path: Path) -> None:
    state = tmp_path / "collector"
    result = enroll(server.enroll_target, server.token("acme", "retail"), state, server.ca.certificate_pem,
                    signals_address=server.mtls_target)
    assert (result.tenant_id, result.cohort, result.server) == ("acme", "retail", server.mtls_target)
    creds = state / "credentials"
    assert stat.S_IMODE((creds / "client.key").stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in (creds / "client.key").read_bytes()
    assert (creds / "ca.crt").read_bytes() == server.ca.certificate_pem
    assert (state / "trust" / "root.json").read_bytes().startswith(b"{")
    assert SignalSchema.from_json((state / "schema.json").read_text()).cohort == "retail"
    # Enrolling the same state directory again needs an explicit force.
    with pytest.raises(TransportError, match="already enrolled"):
        enroll(server.enroll_target, server.token("other"), state, server.ca.certificate_pem)
    # The certificate is the identity the server sees.
    issued = Credentials((creds / "client.key").read_bytes(), (creds / "client.crt").read_bytes(), "acme")
    assert server.whoami(issued) == "acme/retail"


def test_enrollment_refuses_a_server_whose_ca_is_not_the_pinned_one(server: Harness, tmp_path: Path) -> None:
    with running_harness(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "other") as other:
        with pytest.raises(TransportError, match="not signed by the pinned CA") as err:
            enroll(server.enroll_target, server.token("acme"), tmp_path / "c", other.ca.certificate_pem, timeout=5)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "c" / "credentials" / "client.key").exists()


def test_open_channel_without_credentials_says_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="enroll"):
        open_channel(tmp_path, "localhost:1")


def test_enrolled_collector_reports_to_the_real_server_over_mtls(server: Harness, tmp_path: Path) -> None:
    state = tmp_path / "collector"
    enroll(server.enroll_target, server.token("acme", "retail"), state, server.ca.certificate_pem,
           signals_address=server.mtls_target)
    with Collector(CollectorConfig(state_dir=state)) as c:
        assert (c.tenant_id, c.cohort) == ("acme", "retail")
        start = T0 - T0 % c.schema.window_seconds
        c.record_many([turn(f"s{i}", start + i, tool_error=i % 3 == 0) for i in range(30)])
        [outcome] = c.close_windows(now=from_unix(start + 2 * HOUR))
        assert outcome.state == "sealed"
        result = c.deliver(now=from_unix(start + 2 * HOUR))
        assert (result.accepted, result.pending, result.rejected) == (1, 0, 0), c.status()
        # The same sealed bytes again: the server counts them once.
        with c.store.engine.connect() as conn:
            data = conn.execute(select(Release.report)).scalar_one()
        channel = c.channel()
        assert channel is not None
        again = channel.unary_unary(SUBMIT_METHOD, None, signals_pb2.SubmitReportResponse.FromString)(data, timeout=10)
        assert again.outcome == signals_pb2.SubmitReportResponse.DUPLICATE


def test_pull_bundle_installs_the_cohort_bundle_from_the_real_server(
    tmp_path: Path,
) -> None:
    with running_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server",
                         services=[*CORE_SERVICES, BUNDLES]) as h:
        state = tmp_path / "collector"
        enroll(h.enroll_target, h.token("acme", "retail"), state, h.ca.certificate_pem, signals_address=h.mtls_target)
        with Collector(CollectorConfig(state_dir=state)) as c:
            assert c.status().active_bundle is None
            result = c.pull_bundle()
            assert result.status == "installed" and result.active_version >= 1
            assert c.status().active_bundle == f"version {result.active_version}"
            assert c.resolver.resolve("routing", "session-1").version == "baseline"
            assert c.pull_bundle().status == "up_to_date"


# -- the trust root on (re-)enrollment ------------------------------------------------------------------
def _serve_root(h: Harness, data: bytes) -> None:
    """Make the server hand out ``data`` as its current root (as a compromised or rotated server would)."""
    from server.db import transaction
    from server.review.models import TrustRootRecord

    version = json.loads(data)["signed"]["version"]
    with transaction(h.ctx.sessions) as s:
        for rec in s.scalars(select(TrustRootRecord)):
            s.delete(rec)
        s.flush()
        s.add(TrustRootRecord(version=version, root_json=data.decode(), installed_at="2026-11-01T00:00:00+00:00"))


def _enroll(h: Harness, state: Path, *, force: bool = False) -> None:
    enroll(h.enroll_target, h.token("acme", "retail"), state, h.ca.certificate_pem, signals_address=h.mtls_target,
           force=force)


def test_reenrollment_keeps_the_pinned_root_when_the_server_sends_the_same(server: Harness, tmp_path: Path) -> None:
    state = tmp_path / "collector"
    _enroll(server, state)
    pinned, cert = (state / "trust" / "root.json").read_bytes(), (state / "credentials" / "client.crt").read_bytes()
    _enroll(server, state, force=True)  # the routine certificate renewal
    assert (state / "trust" / "root.json").read_bytes() == pinned
    assert (state / "credentials" / "client.crt").read_bytes() != cert


@pytest.mark.parametrize("forged_version", [1, 2])
def test_reenrollment_refuses_a_root_the_pinned_root_does_not_vouch_for(
    server: Harness, tmp_path: Path, forged_version: int
) -> None:
    """A server (or its operator) re-anchors trust on `enroll --force`: a forged root, self-signed by
    attacker keys, must not replace the pinned root; nothing of the enrollment is written."""
    state = tmp_path / "collector"
    _enroll(server, state)
    pinned = (state / "trust" / "root.json").read_bytes()
    files = {p: p.read_bytes() for p in (state / "credentials").iterdir()}
    _serve_root(server, World().make_root(version=forged_version))
    with pytest.raises(TransportError, match="trust root"):
        _enroll(server, state, force=True)
    assert (state / "trust" / "root.json").read_bytes() == pinned
    assert {p: p.read_bytes() for p in (state / "credentials").iterdir()} == files


def test_reenrollment_follows_a_valid_rotation_and_keeps_the_pin_for_a_later_one(
    server: Harness, tmp_path: Path
) -> None:
    world = World()
    _serve_root(server, world.make_root())
    state = tmp_path / "collector"
    _enroll(server, state)
    v2 = world.make_root(version=2)  # signed by v1's root threshold and its own
    _serve_root(server, v2)
    _enroll(server, state, force=True)
    assert (state / "trust" / "root.json").read_bytes() == v2
    # v4 cannot be checked against the pinned v2 directly: keep v2, the bundle client follows the chain.
    _serve_root(server, world.make_root(version=4))
    _enroll(server, state, force=True)
    assert (state / "trust" / "root.json").read_bytes() == v2
    # A newer root by other keys is no reason to drop the pin either; an older one is refused.
    _serve_root(server, World().make_root(version=9))
    _enroll(server, state, force=True)
    assert (state / "trust" / "root.json").read_bytes() == v2
    _serve_root(server, world.make_root(version=1))
    with pytest.raises(TransportError, match="nor newer"):
        _enroll(server, state, force=True)


def test_first_enrollment_refuses_a_root_not_signed_by_its_own_threshold(server: Harness, tmp_path: Path) -> None:
    world = World()
    _serve_root(server, world.make_root(sign_with=world.reviewers[:1]))  # root threshold 2, one signature
    state = tmp_path / "collector"
    with pytest.raises(TransportError, match="does not verify"):
        _enroll(server, state)
    assert not (state / "credentials" / "client.key").exists() and not (state / "trust" / "root.json").exists()
    _serve_root(server, b'{"signed": {"_type": "root", "version": 1}, "signatures": []}')
    with pytest.raises(TransportError, match="does not verify"):
        _enroll(server, state)
