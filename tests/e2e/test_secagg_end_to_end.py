"""Secure aggregation end to end: real collectors, real gRPC over mutual TLS, both stores.

Collectors enroll, register their masking keys, seal a window (masked input with a noise
share), attest the survivor set and unmask; the server's job releases the sum into the
merged-window table the views read. One collector is "killed" (never submits): it is a
dropout and the window is released once, from the survivors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedsignal.v1 import secagg_pb2, secagg_pb2_grpc
from sqlalchemy import func, select

from aggregation.schema import SignalSchema
from aggregation.secagg import Attestation, RoundContext, roster_digest
from fedsignal_cli.simulator import AgentNetwork, SimTenant
from server.audit import verify_audit
from server.secagg.job import run_rounds
from server.secagg.models import DONE, ParticipantRecord, RoundRecord
from server.secagg.rounds import SecAggSettings, configure
from server.secagg.service import SERVICE_NAME
from server.signals.models import MergedWindow
from tenant_agent import Collector
from tests.e2e.secagg_support import SECAGG_SERVICES, advance_until, secure_collector, serving
from tests.harness import Harness

WINDOW = 3600


@pytest.fixture
def h(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    with serving(database_url, tmp_path / "server") as h:
        yield h


def _registered(h: Harness, tmp: Path, tenants: list[str]) -> list[Collector]:
    """Enrolled collectors of ``tenants`` with their masking keys in the roster and the cohort's schema."""
    return [secure_collector(h, tmp, t) for t in tenants]


def test_a_secure_round_releases_the_sum_of_the_survivors_once(h: Harness, tmp_path: Path) -> None:
    assert SECAGG_SERVICES
    configure(h.ctx, SecAggSettings(submit_seconds=3.0, unmask_seconds=30.0))
    tenants = [f"t{i}" for i in range(5)]
    collectors = _registered(h, tmp_path, tenants)
    try:
        schema: SignalSchema = collectors[0].schema
        assert schema.aggregation_mode == "secure" and schema.noise_scale > 0
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant(t, "retail", 30) for t in tenants], seed=5)
        truth = np.zeros(schema.size, dtype=np.int64)
        live = collectors[:4]  # the fifth is killed before its window closes: a dropout
        for sim, c in zip(net.tenants, collectors, strict=True):
            c.record_many(net.window_events(sim, start, WINDOW))
        for c in live:
            with c.store.engine.connect() as conn:
                from tenant_agent.windows import WindowBook

                truth += WindowBook.bounded_table(conn, start, schema)
            outcomes = c._sealer.close_due(start + WINDOW + 1, schema)
            assert [o.state for o in outcomes] == ["sealed"]
            c.secure.advance_all()
        collectors.pop().close()
        time.sleep(3.2)
        summary = run_rounds(h.ctx)
        assert summary.closed == 1
        advance_until(live, lambda: _phase(h) == DONE, run_job=lambda: run_rounds(h.ctx))
        with h.ctx.sessions() as session:
            rounds = session.scalars(select(RoundRecord)).all()
            assert len(rounds) == 1 and rounds[0].phase == DONE
            merged = session.scalars(select(MergedWindow)).all()
            assert len(merged) == 1
            row = merged[0]
            assert (row.cohort, row.window_start, row.tenants, row.generation) == ("retail", start, 4, 1)
            cells = np.frombuffer(row.cells, dtype="<i8")
            # The released sum is the survivors' tables plus noise of variance 4 sigma_share^2.
            sigma = float(np.sqrt(row.variance))
            assert np.all(np.abs(cells - truth) < 8 * sigma)
            assert abs(row.variance - 4 / rounds[0].threshold * rounds[0].sigma_central**2) < 1e-6
            # Nothing unmasked is stored, and the masked inputs are gone after release.
            assert session.scalar(select(func.count()).select_from(ParticipantRecord)
                                  .where(ParticipantRecord.masked_input.is_not(None))) == 0
            assert verify_audit(session).ok
        # The last survivor to attest got the t attestations with its SubmitAttestation reply: only
        # the earlier ones asked for them again (GetUnmaskRequest without the request).
        queries = [secagg_pb2.UnmaskQuery.FromString(b) for b in h.tap.received(f"/{SERVICE_NAME}/GetUnmaskRequest")]
        assert sum(q.omit_request for q in queries) == len(live) - 1
        replies = h.tap.received(f"/{SERVICE_NAME}/SubmitAttestation")
        assert len(replies) == len(live)
        for c in live:
            summary_ = c.secure.loss_summary()
            assert summary_.rounds_done == 1 and summary_.releases == 1
            assert summary_.own_worst_case_rho > summary_.cohort_rho > 0
    finally:
        for c in collectors:
            c.close()


def _attesters(h: Harness) -> list[str]:
    """The tenant of every SubmitAttestation call the server received, in order."""
    return [Attestation.from_bytes(secagg_pb2.SubmitAttestationRequest.FromString(b).attestation).tenant_id
            for b in h.tap.received(f"/{SERVICE_NAME}/SubmitAttestation")]


def _phase(h: Harness) -> str | None:
    with h.ctx.sessions() as session:
        return session.scalar(select(RoundRecord.phase))


def test_a_tenant_holding_the_roster_gets_the_next_context_without_it(h: Harness, tmp_path: Path) -> None:
    collectors = _registered(h, tmp_path, ["t0", "t1", "t2"])
    try:
        c = collectors[0]
        schema = c.schema
        start = (int(time.time()) // WINDOW - 3) * WINDOW
        first = c.secure.prepare(start, schema)
        second = c.secure.prepare(start + WINDOW, schema)
        assert first is not None and second is not None
        assert second.ctx.roster == first.ctx.roster and second.ctx.window_start == start + WINDOW
        queries = [secagg_pb2.GetRoundRequest.FromString(b) for b in h.tap.received(f"/{SERVICE_NAME}/GetRound")]
        assert [bool(q.roster_digest) for q in queries] == [False, True]
        assert queries[1].roster_digest == roster_digest(first.ctx.roster)
        # What the server answered: the header only, which rebuilds the very context it holds.
        stub = secagg_pb2_grpc.SecureAggregationServiceStub(c.channel())
        held = stub.GetRound(secagg_pb2.GetRoundRequest(window_start=start + WINDOW, schema_version=schema.version,
                                                         omit_roster=True, roster_digest=queries[1].roster_digest))
        assert not held.context and held.context_header
        full = stub.GetRound(secagg_pb2.GetRoundRequest(window_start=start + WINDOW, schema_version=schema.version,
                                                         omit_roster=True, roster_digest=bytes(32)))  # a stale roster
        assert full.context and not full.context_header
        rebuilt = RoundContext.from_header(held.context_header, first.ctx.roster)
        assert rebuilt.to_bytes() == full.context and rebuilt.digest() == second.ctx.digest()
        # A fourth tenant joins: the roster changed, so the held digest no longer matches.
        late = secure_collector(h, tmp_path, "t3", register=False)
        collectors.append(late)
        assert late.secure.register_key()
        third = c.secure.prepare(start + 2 * WINDOW, schema)
        assert third is not None and len(third.ctx.roster) == 4
        info = stub.GetRound(secagg_pb2.GetRoundRequest(window_start=start + 2 * WINDOW, schema_version=schema.version,
                                                         omit_roster=True, roster_digest=queries[1].roster_digest))
        assert info.context and not info.context_header
    finally:
        for c in collectors:
            c.close()


def test_a_tenant_waiting_for_attestations_sends_its_own_once(h: Harness, tmp_path: Path) -> None:
    """While fewer than t attested, the relay names no signer; the collector remembers that its
    attestation is stored and only fetches on later passes (a second, differently randomised ECDSA
    signature would be refused as ALREADY_EXISTS)."""
    configure(h.ctx, SecAggSettings(submit_seconds=30.0, unmask_seconds=30.0))
    tenants = [f"t{i}" for i in range(4)]
    collectors = _registered(h, tmp_path, tenants)
    try:
        schema = collectors[0].schema
        start = (int(time.time()) // WINDOW - 2) * WINDOW
        net = AgentNetwork([SimTenant(t, "retail", 20) for t in tenants], seed=3)
        for sim, c in zip(net.tenants, collectors, strict=True):
            c.record_many(net.window_events(sim, start, WINDOW))
            assert [o.state for o in c._sealer.close_due(start + WINDOW + 1, schema)] == ["sealed"]
            c.secure.advance_all()  # submits; the last input closes the round
        first = collectors[0]
        for _ in range(3):  # attests, then waits: the others have not attested yet
            first.secure.advance_all()
        assert _attesters(h).count("t0") == 1 and len(_attesters(h)) < len(collectors)  # fewer than t are in
        advance_until(collectors, lambda: _phase(h) == DONE, run_job=lambda: run_rounds(h.ctx))
        assert sorted(_attesters(h)) == tenants  # one attestation each
        for c in collectors:  # those that had not answered yet learn that the round was released
            c.secure.advance_all()
        assert [c.secure.loss_summary().rounds_done for c in collectors] == [1] * len(collectors)
    finally:
        for c in collectors:
            c.close()
