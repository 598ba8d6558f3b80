"""Secure aggregation under attack, over real gRPC and TLS on both stores.

Replays into another window or cohort, conflicting, malformed and late messages are each
refused with their own status; a roster signature that does not verify is refused by the
server and by tenants; fewer than t inputs abort visibly; a server that shows one tenant a
different survivor set is detected by that tenant, which never answers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fedsignal.v1 import secagg_pb2, secagg_pb2_grpc
from sqlalchemy import func, select

from aggregation.schema import SignalSchema
from aggregation.secagg import MaskedInput, RoundContext, UnmaskRequest
from server.audit import iter_audit
from server.db import transaction
from server.secagg.job import run_rounds
from server.secagg.models import ABORTED, DONE, ParticipantRecord, RoundRecord
from server.secagg.rounds import SecAggSettings, configure
from tenant_agent import Collector, CollectorConfig, enroll
from tenant_agent.config import BudgetConfig
from tenant_agent.secagg import DROPPED, REFUSED, RosterRejected
from tests.e2e.secagg_support import advance_until, secure_collector, serving
from tests.harness import Harness

WINDOW = 3600


@pytest.fixture
def h(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    with serving(database_url, tmp_path / "server", SecAggSettings(submit_seconds=600.0, unmask_seconds=600.0)) as h:
        yield h


def _window() -> int:
    return (int(time.time()) // WINDOW - 2) * WINDOW


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def _stub(c: Collector) -> secagg_pb2_grpc.SecureAggregationServiceStub:
    channel = c.channel()
    assert channel is not None
    return secagg_pb2_grpc.SecureAggregationServiceStub(channel)


def _masked(c: Collector, start: int) -> tuple[str, bytes]:
    """Seal an empty input for ``start`` and return (round id, the masked input bytes it persisted)."""
    schema: SignalSchema = c.schema
    rid = c.secure.seal(start, schema, time.time(), lambda conn, now: c._budget_policy(conn, now), None)
    assert rid is not None
    state = c.secure._load(start)
    assert state is not None
    import base64

    return rid, base64.b64decode(state["masked_input"])


def test_round_messages_out_of_place_are_refused_each_with_its_status(h: Harness, tmp_path: Path) -> None:
    cs = [secure_collector(h, tmp_path, f"r{i}") for i in range(3)]
    other = [secure_collector(h, tmp_path, f"o{i}", cohort="travel") for i in range(2)]
    try:
        start = _window()
        rid, data = _masked(cs[0], start)
        rid_next, _ = _masked(cs[1], start + WINDOW)
        stub = _stub(cs[0])
        # The seal already delivered it; a retry of the same bytes is a duplicate, not an error.
        assert stub.GetRoundStatus(secagg_pb2.RoundRef(round_id=rid)).inputs == 1
        again = stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(round_id=rid, masked_input=data))
        assert again.outcome == secagg_pb2.SubmitMaskedInputResponse.DUPLICATE
        # Replayed into the next window's round: made for another context.
        assert _code(lambda: stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid_next, masked_input=data))) is grpc.StatusCode.FAILED_PRECONDITION
        # Into another cohort's round: refused before anything is parsed against it.
        rid_other, _ = _masked(other[0], start)
        assert _code(lambda: stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid_other, masked_input=data))) is grpc.StatusCode.PERMISSION_DENIED
        # Another tenant's input sent by this one.
        _, data1 = _masked(cs[1], start)
        assert _code(lambda: stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid, masked_input=data1))) is grpc.StatusCode.PERMISSION_DENIED
        # Truncated bytes.
        assert _code(lambda: stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid, masked_input=data[:-3]))) is grpc.StatusCode.INVALID_ARGUMENT
        # A second, different input from the same tenant.
        with h.ctx.sessions() as session:
            rctx = RoundContext.from_bytes(session.scalars(
                select(RoundRecord.context).where(RoundRecord.round_id == rid)).one())
        msg = MaskedInput.from_bytes(data, rctx)
        forged = MaskedInput(msg.context_digest, msg.sender, msg.modulus_bits, bytes(len(msg.masked)),
                             msg.seed_commitment, msg.shares, roster=msg.roster).to_bytes()
        assert _code(lambda: stub.SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid, masked_input=forged))) is grpc.StatusCode.ALREADY_EXISTS
        assert _code(lambda: stub.GetRoundStatus(secagg_pb2.RoundRef(round_id="nope"))) is grpc.StatusCode.NOT_FOUND
        # Bytes that are not even the request message.
        channel = cs[0].channel()
        assert channel is not None
        raw = channel.unary_unary("/fedsignal.v1.SecureAggregationService/SubmitMaskedInput")
        assert _code(lambda: raw(b"\xff\xff\xff")) is grpc.StatusCode.INVALID_ARGUMENT
        # Late: the deadline passes, the round closes without cs[2], whose input is then refused.
        configure(h.ctx, SecAggSettings(submit_seconds=0.0))
        rid_late, late = _masked(cs[2], start + 2 * WINDOW)
        assert _code(lambda: _stub(cs[2]).SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=rid_late, masked_input=late))) is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        for c in cs + other:
            c.close()


class _Offline(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The server unreachable for SubmitMaskedInput while ``down``: the input stays persisted, unacknowledged."""

    def __init__(self) -> None:
        self.down = True

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if self.down and details.method.endswith("/SubmitMaskedInput"):
            raise _Unreachable()
        return continuation(details, request)


class _Unreachable(grpc.RpcError):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "offline"


def test_a_stored_input_the_server_refuses_as_malformed_makes_a_dropout_not_an_endless_retry(
        h: Harness, tmp_path: Path) -> None:
    from tenant_agent.transport import open_channel

    tdir = tmp_path / "m0"
    enroll(h.enroll_target, h.token("m0"), tdir, h.ca.certificate_pem, signals_address=h.mtls_target)
    offline = _Offline()
    c = secure_collector(h, tmp_path, "m0-unused")  # a second tenant, so that the round has a roster of two
    victim = Collector(CollectorConfig(state_dir=tdir, server=h.mtls_target, budget=BudgetConfig(rho_per_period=10.0)),
                       channel=grpc.intercept_channel(open_channel(tdir, h.mtls_target), offline))
    try:
        assert victim.secure.register_key()
        victim.refresh_schema()
        start = _window()
        _masked(victim, start)
        state = victim.secure._load(start)
        assert state is not None and state["state"] == "submitted"  # persisted, never acknowledged
        # What a collector persisted before an upgrade changed the message format: bytes the
        # server refuses (INVALID_ARGUMENT), now and at every retry.
        import base64

        stale = b"FSM2" + base64.b64decode(state["masked_input"])[4:]
        state["masked_input"] = base64.b64encode(stale).decode()
        victim.secure._save(state)
        offline.down = False
        assert _code(lambda: _stub(victim).SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(
            round_id=state["round_id"], masked_input=stale))) is grpc.StatusCode.INVALID_ARGUMENT
        assert victim.secure.advance_all().get(start) == DROPPED
        final = victim.secure._load(start)
        assert final is not None and final["state"] == DROPPED
        assert "refused this tenant's submitted round message as malformed" in final["note"]
        assert victim.secure.advance_all() == {}  # nothing is resent on later passes
        with h.ctx.sessions() as session:  # and the server holds no input from it
            assert session.scalar(select(func.count()).select_from(ParticipantRecord)) == 0
    finally:
        victim.close()
        c.close()


def test_a_roster_signature_that_does_not_verify_is_refused_by_server_and_tenants(h: Harness, tmp_path: Path) -> None:
    cs = [secure_collector(h, tmp_path, f"s{i}") for i in range(3)]
    try:
        stub = _stub(cs[0])
        key = cs[0].secure.public_key
        assert _code(lambda: stub.RegisterMaskingKey(secagg_pb2.RegisterMaskingKeyRequest(
            public_key=bytes(32), signature=b"\x30\x06\x02\x01\x01\x02\x01\x01"))) is grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: stub.RegisterMaskingKey(secagg_pb2.RegisterMaskingKeyRequest(
            public_key=key[:5], signature=b"x"))) is grpc.StatusCode.INVALID_ARGUMENT
        schema = cs[0].schema
        start = _window()
        info = stub.GetRound(secagg_pb2.GetRoundRequest(window_start=start, schema_version=schema.version))
        assert cs[0].secure.verify_round(info, start, schema).round_id == info.round_id
        # A server that swaps in a key of its own for s1 (signature no longer matches).
        tampered = secagg_pb2.RoundInfo()
        tampered.CopyFrom(info)
        sig = bytearray(tampered.roster[1].signature)
        sig[-1] ^= 1
        tampered.roster[1].signature = bytes(sig)
        with pytest.raises(RosterRejected, match="signature does not verify"):
            cs[0].secure.verify_round(tampered, start, schema)
        # A certificate from another CA (the party running enrollment inventing a member).
        from server.identity.ca import CertificateAuthority

        rogue = CertificateAuthority.create(tmp_path / "rogue")
        _key, issued = rogue.issue_key_and_cert("s1", "retail", "tenant")
        tampered.CopyFrom(info)
        tampered.roster[1].certificate_pem = issued.certificate_pem
        with pytest.raises(RosterRejected, match="pinned CA"):
            cs[0].secure.verify_round(tampered, start, schema)
    finally:
        for c in cs:
            c.close()


def test_fewer_than_t_inputs_abort_the_round_visibly(h: Harness, tmp_path: Path) -> None:
    configure(h.ctx, SecAggSettings(submit_seconds=60.0))
    cs = [secure_collector(h, tmp_path, f"a{i}") for i in range(4)]
    try:
        start = _window()
        rid, data = _masked(cs[0], start)
        _stub(cs[0]).SubmitMaskedInput(secagg_pb2.SubmitMaskedInputRequest(round_id=rid, masked_input=data))
        assert run_rounds(h.ctx).aborted == 0  # still collecting: nothing to decide yet
        # The submission deadline passes (moved, rather than slept past: a loaded machine must not
        # make the one input itself late).
        with transaction(h.ctx.sessions) as session:
            row = session.scalars(select(RoundRecord).where(RoundRecord.round_id == rid)).one()
            row.submit_deadline = datetime.now(UTC) - timedelta(seconds=1)
        assert run_rounds(h.ctx).aborted == 1
        status = _stub(cs[0]).GetRoundStatus(secagg_pb2.RoundRef(round_id=rid))
        assert status.phase == secagg_pb2.ABORTED and status.inputs == 1 and status.threshold == 3
        assert "threshold" in status.abort_reason
        assert _code(lambda: _stub(cs[0]).GetUnmaskRequest(secagg_pb2.UnmaskQuery(round_id=rid))) is grpc.StatusCode.ABORTED
        with h.ctx.sessions() as session:
            kinds = [e.kind for e in iter_audit(session)]
            assert session.scalar(select(RoundRecord.phase)) == ABORTED
        assert "secagg.round.aborted" in kinds
        assert cs[0].secure.advance_all() == {start: "aborted"}
        metrics = h.ctx.metrics.registry.get_sample_value(
            "fedsignal_secagg_rounds_total", {"cohort": "retail", "outcome": "aborted"})
        assert metrics == 1.0
    finally:
        for c in cs:
            c.close()


class _Equivocating(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A malicious server, seen from one tenant: it shows that tenant a survivor set without ``hidden``
    and swallows the tenant's attestation, while every other tenant sees the true set."""

    def __init__(self, hidden: str) -> None:
        self.hidden = hidden
        self.unmask_sent = False
        self.ctx: RoundContext | None = None  # the round's context, as the server sent it (the request names positions in its roster)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method
        if method.endswith("/SubmitAttestation"):
            return _Done(secagg_pb2.SubmitAttestationResponse())
        if method.endswith("/SubmitUnmaskResponse"):
            self.unmask_sent = True
        call = continuation(details, request)
        if method.endswith("/GetRound"):
            info = call.result()
            if info.context:
                self.ctx = RoundContext.from_bytes(info.context)
            elif info.context_header and self.ctx is not None:
                self.ctx = RoundContext.from_header(info.context_header, self.ctx.roster)
            return call
        if not method.endswith("/GetUnmaskRequest"):
            return call
        view = call.result()
        if not view.unmask_request:
            return call
        assert self.ctx is not None
        req = UnmaskRequest.from_bytes(view.unmask_request, self.ctx)
        shown = UnmaskRequest(req.context_digest, req.recipient,
                              tuple(t for t in req.survivors if t != self.hidden),
                              tuple(s for s in req.shares if s.sender != self.hidden), roster=req.roster)
        out = secagg_pb2.UnmaskRequestInfo()
        out.CopyFrom(view)
        out.unmask_request = shown.to_bytes()
        return _Done(out)


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value


def test_a_server_showing_inconsistent_survivor_sets_is_detected(h: Harness, tmp_path: Path) -> None:
    honest = [secure_collector(h, tmp_path, f"e{i}") for i in range(4)]
    victim_dir = "e4"
    spy = _Equivocating(hidden="e3")
    enroll(h.enroll_target, h.token(victim_dir), tmp_path / victim_dir, h.ca.certificate_pem,
           signals_address=h.mtls_target)
    from tenant_agent.transport import open_channel

    channel = grpc.intercept_channel(open_channel(tmp_path / victim_dir, h.mtls_target), spy)
    victim = Collector(CollectorConfig(state_dir=tmp_path / victim_dir, server=h.mtls_target,
                                       budget=BudgetConfig(rho_per_period=10.0)), channel=channel)
    everyone = [*honest, victim]
    try:
        assert victim.secure.register_key()
        victim.refresh_schema()
        start = _window()
        for c in everyone:
            assert c.secure.seal(start, c.schema, time.time(), lambda conn, now, c=c: c._budget_policy(conn, now),
                                 None)
        for c in everyone:  # all five submit: the round closes with every tenant a survivor
            c.secure.advance_all()
        advance_until(honest, lambda: victim.secure.advance_all().get(start) is None,
                      run_job=lambda: victim.secure.advance_all(), timeout=30)
        state = victim.secure._load(start)
        assert state is not None and state["state"] == REFUSED
        assert "InconsistentSurvivors" in state["note"]
        assert not spy.unmask_sent
        # The honest tenants' attestations still hold (t = 4 of 5): the round releases without the victim's answer.
        advance_until(honest, lambda: _phase(h) == DONE, run_job=lambda: run_rounds(h.ctx))
    finally:
        for c in everyone:
            c.close()


def _phase(h: Harness) -> str | None:
    with h.ctx.sessions() as session:
        return session.scalar(select(RoundRecord.phase))
