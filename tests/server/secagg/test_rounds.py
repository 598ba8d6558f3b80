"""Rounds in the database, driven by the real kernel's messages (no gRPC): opening, thresholds,
readiness, concurrent jobs (nothing unmasked or released twice), the schema's noise in ingest."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from aggregation.schema import LOCAL, SECURE
from aggregation.secagg import (
    Attestation,
    ClientRound,
    RelayedAttestations,
    RoundContext,
    UnmaskRequest,
    generate_keypair,
    plan_noise,
)
from server.audit import iter_audit
from server.context import ServerContext, ServerSettings
from server.db import make_engine, make_sessionmaker, transaction
from server.identity.ca import CertificateAuthority
from server.identity.models import TenantRecord
from server.migrate import init_db
from server.secagg import roster as roster_mod
from server.secagg import rounds
from server.secagg.facts import cache_for
from server.secagg.job import run_rounds
from server.secagg.models import ABORTED, DONE, UNMASKING, RoundRecord
from server.signals.models import MergedWindow
from server.signals.schemas import current_schema, publish_aggregation

COHORT = "retail"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp())


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _ctx(database_url: str, clock: Clock) -> ServerContext:
    engine = make_engine(database_url)
    init_db(engine)
    return ServerContext(settings=ServerSettings(database_url=database_url), engine=engine,
                         sessions=make_sessionmaker(engine), clock=clock)


class Member:
    def __init__(self, ca: CertificateAuthority, tenant_id: str) -> None:
        key_pem, issued = ca.issue_key_and_cert(tenant_id, COHORT, "tenant")
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.tenant_id, self.identity, self.cert = tenant_id, key, issued.certificate_pem
        self.private, self.public = generate_keypair()
        self.client: ClientRound | None = None

    def sign(self, message: bytes) -> bytes:
        return self.identity.sign(message, ec.ECDSA(hashes.SHA256()))


def _cohort(ctx: ServerContext, tmp: Path, n: int) -> list[Member]:
    ca = CertificateAuthority.create(tmp / "ca")
    members = [Member(ca, f"t{i:02d}") for i in range(n)]
    with transaction(ctx.sessions) as session:
        current_schema(session, COHORT)
        for m in members:
            session.add(TenantRecord(tenant_id=m.tenant_id, cohort=COHORT, created_at=NOW, enrolled_at=NOW))
            session.flush()
            roster_mod.register(session, m.tenant_id, COHORT, m.public,
                                m.sign(roster_mod.statement(COHORT, m.tenant_id, m.public)), m.cert, NOW)
    return members


def masked_inputs(ctx: ServerContext, members: list[Member], row_id: str, table: np.ndarray) -> dict[str, bytes]:
    """Each member's masked input of ``table`` for the round (each member's ``client`` set)."""
    with ctx.sessions() as session:
        row = session.scalars(select(RoundRecord).where(RoundRecord.round_id == row_id)).one()
        rctx = RoundContext.from_bytes(row.context)
        schema = current_schema(session, COHORT)
    plan = plan_noise(row.sigma_central, schema.max_cells_per_unit, schema.max_count_per_cell, row.roster_size,
                      row.threshold)
    out = {}
    for m in members:
        m.client = ClientRound(rctx, m.tenant_id, m.private, plan)
        out[m.tenant_id] = m.client.submit(table).to_bytes()
    return out


def _submit(ctx: ServerContext, members: list[Member], row_id: str, table: np.ndarray) -> None:
    for tenant_id, data in masked_inputs(ctx, members, row_id, table).items():
        with transaction(ctx.sessions) as session:
            assert rounds.submit_input(session, tenant_id, COHORT, row_id, data, ctx.clock()) == "accepted"


def _attest_and_answer(ctx: ServerContext, members: list[Member], row_id: str) -> None:
    requests = {}
    attested: list[str] = []
    for m in members:
        with ctx.sessions() as session:
            view = rounds.unmask_view(session, cache_for(ctx.engine), m.tenant_id, COHORT, row_id)
        assert m.client is not None
        req = UnmaskRequest.from_bytes(view.request, m.client.ctx)
        requests[m.tenant_id] = req
        digest = m.client.attest(req)
        att = Attestation(m.tenant_id, digest, m.sign(rounds.attestation_message(digest)))
        with transaction(ctx.sessions) as session:
            stored, threshold, rctx, relay = rounds.submit_attestation(session, m.tenant_id, COHORT, row_id,
                                                                       att.to_bytes())
            assert rctx == m.client.ctx
            assert threshold == session.scalars(select(RoundRecord.threshold).where(RoundRecord.round_id == row_id)).one()
            attested.append(m.tenant_id)
            if len(attested) < threshold:  # fewer than t: nothing to relay, and none read
                assert stored is None and relay == b""
            else:  # every attestation so far comes back (the caller's too)
                assert relay is None and stored is not None
                assert sorted(stored) == sorted(attested) and stored[m.tenant_id] == att.to_bytes()
    verify = {m.tenant_id: m for m in members}

    def ok(tid: str, digest: bytes, sig: bytes) -> bool:
        return roster_mod.verify_ecdsa(verify[tid].cert, rounds.attestation_message(digest), sig)

    for m in members:
        with ctx.sessions() as session:
            view = rounds.unmask_view(session, cache_for(ctx.engine), m.tenant_id, COHORT, row_id)
        assert m.client is not None
        # t attestations relayed compactly: the signers by roster position, the digest once.
        relayed = RelayedAttestations.from_bytes(view.attestations)
        assert len(relayed) == view.threshold and relayed.digest == m.client.attest(requests[m.tenant_id])
        resp = m.client.unmask(requests[m.tenant_id], relayed.attestations(m.client.ctx), ok)
        with transaction(ctx.sessions) as session:
            row = session.scalars(select(RoundRecord).where(RoundRecord.round_id == row_id)).one()
            if row.phase != UNMASKING:
                return
            rounds.submit_response(session, m.tenant_id, COHORT, row_id, resp.to_bytes(), ctx.clock())


def _open(ctx: ServerContext, window: int = WINDOW) -> RoundRecord:
    with transaction(ctx.sessions) as session:
        return rounds.open_round(session, COHORT, window, 1, ctx.clock(), rounds.settings_for(ctx))


@pytest.mark.parametrize(("n", "t"), [(2, 2), (3, 3), (5, 4), (10, 7), (20, 14), (100, 70)])
def test_threshold_is_seventy_percent_rounded_up_and_a_strict_majority(n: int, t: int) -> None:
    assert rounds.threshold_for(n, 0.7) == t
    assert 2 * t > n


def test_rounds_open_only_for_secure_cohorts_with_a_roster_and_aligned_windows(database_url: str,
                                                                             tmp_path: Path) -> None:
    ctx = _ctx(database_url, Clock())
    with transaction(ctx.sessions) as session:
        schema = current_schema(session, COHORT)
        assert schema.aggregation_mode == SECURE and schema.noise_scale > 0
    with pytest.raises(rounds.RoundUnavailable, match="roster"):
        _open(ctx)
    _cohort(ctx, tmp_path, 3)
    with pytest.raises(rounds.RoundUnavailable, match="aligned"):
        _open(ctx, WINDOW + 1)
    row = _open(ctx)
    assert (row.roster_size, row.threshold, row.phase) == (3, 3, "collecting")
    assert _open(ctx).round_id == row.round_id  # one round per window
    with transaction(ctx.sessions) as session:
        publish_aggregation(session, COHORT, LOCAL, schema.noise_scale)
    with pytest.raises(rounds.RoundUnavailable, match="local"), transaction(ctx.sessions) as session:
        rounds.open_round(session, COHORT, WINDOW, 2, NOW)


def test_concurrent_jobs_release_a_round_once(database_url: str, tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(database_url, clock)
    members = _cohort(ctx, tmp_path, 5)
    row = _open(ctx)
    table = np.arange(row_len := RoundContext.from_bytes(row.context).length, dtype=np.int64) % 7
    _submit(ctx, members[:4], row.round_id, table)  # t = 4: the fifth is a dropout
    clock.now = NOW + timedelta(seconds=rounds.DEFAULT_SETTINGS.submit_seconds + 1)
    assert run_rounds(ctx).closed == 1
    # Every survivor answers, but the release is left to the jobs: stop responses from releasing inline.
    original = rounds.try_release
    rounds.try_release = lambda *a, **k: UNMASKING  # type: ignore[assignment]
    try:
        _attest_and_answer(ctx, members[:4], row.round_id)
    finally:
        rounds.try_release = original  # type: ignore[assignment]
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(run_rounds(ctx))) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    with ctx.sessions() as session:
        merged = session.scalars(select(MergedWindow)).all()
        released = [e for e in iter_audit(session) if e.kind == "secagg.round.released"]
        phase = session.scalar(select(RoundRecord.phase))
    assert phase == DONE and len(released) == 1
    assert len(merged) == 1 and merged[0].generation == 1 and merged[0].tenants == 4
    cells = np.frombuffer(merged[0].cells, dtype="<i8")
    assert cells.shape == (row_len,)
    assert np.all(np.abs(cells - 4 * table) < 10 * np.sqrt(merged[0].variance))
    assert sum(getattr(r, "released", 0) for r in results) == 1


def test_unanswered_rounds_abort_at_the_unmask_deadline(database_url: str, tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(database_url, clock)
    members = _cohort(ctx, tmp_path, 3)
    row = _open(ctx)
    _submit(ctx, members, row.round_id, np.zeros(RoundContext.from_bytes(row.context).length, dtype=np.int64))
    with ctx.sessions() as session:
        assert session.scalar(select(RoundRecord.phase)) == UNMASKING  # everyone submitted: closed at once
    clock.now = NOW + timedelta(seconds=rounds.DEFAULT_SETTINGS.unmask_seconds + 1)
    assert run_rounds(ctx).aborted == 1
    with ctx.sessions() as session:
        assert session.scalar(select(RoundRecord.phase)) == ABORTED
        assert session.scalar(select(func.count()).select_from(MergedWindow)) == 0


def test_responses_suffice_follows_the_kernel_rule(database_url: str, tmp_path: Path) -> None:
    ctx = _ctx(database_url, Clock())
    _cohort(ctx, tmp_path, 5)
    row = _open(ctx)
    row.survivors_json = '["t00", "t01", "t02", "t03"]'
    # Complete graph, t = 4: every seed needs 4 answering holders; t04 dropped, so every survivor must answer.
    assert not rounds.responses_suffice(row, {"t00", "t01", "t02"})
    assert rounds.responses_suffice(row, {"t00", "t01", "t02", "t03"})
