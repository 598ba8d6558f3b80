"""The message handlers take a round's immutable facts from the per-process cache and read only
what moves (phase, survivor set) from the database, under the round's lock: a cache, however
stale, never accepts a message the stored round refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from aggregation.secagg import Attestation, UnmaskRequest
from server.context import ServerContext
from server.db import transaction
from server.secagg import rounds
from server.secagg.facts import RoundFactsCache
from server.secagg.models import ABORTED, UNMASKING, ParticipantRecord, RoundRecord
from server.signals.schemas import current_schema
from tests.server.secagg.test_rounds import COHORT, WINDOW, Clock, Member, _cohort, _ctx, _open, masked_inputs


def _inputs(ctx: ServerContext, members: list[Member], rid: str) -> dict[str, bytes]:
    with ctx.sessions() as session:
        length = current_schema(session, COHORT).size
    return masked_inputs(ctx, members, rid, np.zeros(length, dtype=np.int64))


def _submit(ctx: ServerContext, cache: RoundFactsCache, m: Member, rid: str, data: bytes) -> str:
    with transaction(ctx.sessions) as session:
        return rounds.submit_input(session, m.tenant_id, COHORT, rid, data, ctx.clock(), cache=cache)


def _set_phase(ctx: ServerContext, rid: str, phase: str) -> None:
    """Another replica's transition (this process's caches do not see it)."""
    with transaction(ctx.sessions) as session:
        session.execute(update(RoundRecord).where(RoundRecord.round_id == rid).values(phase=phase, abort_reason="x"))


def test_a_cached_round_still_refuses_what_its_stored_phase_refuses(database_url: str, tmp_path: Path) -> None:
    ctx = _ctx(database_url, Clock())
    members = _cohort(ctx, tmp_path, 4)
    rid = _open(ctx).round_id
    data = _inputs(ctx, members, rid)
    cache = RoundFactsCache()
    assert _submit(ctx, cache, members[0], rid, data["t00"]) == "accepted"
    assert cache.get(rid) is not None  # the facts are cached now
    _set_phase(ctx, rid, UNMASKING)  # closed elsewhere: this tenant is a dropout
    with pytest.raises(rounds.LateMessage):
        _submit(ctx, cache, members[1], rid, data["t01"])
    _set_phase(ctx, rid, ABORTED)
    with pytest.raises(rounds.RoundWasAborted):
        _submit(ctx, cache, members[1], rid, data["t01"])
    # What was acknowledged stays acknowledged; nothing refused was stored.
    assert _submit(ctx, cache, members[0], rid, data["t00"]) == "duplicate"
    with ctx.sessions() as session:
        assert session.scalars(select(ParticipantRecord.tenant_id)).all() == ["t00"]
    with pytest.raises(rounds.CrossCohort), transaction(ctx.sessions) as session:  # the cached cohort is checked too
        rounds.submit_input(session, "t01", "another-cohort", rid, data["t01"], ctx.clock(), cache=cache)


def test_facts_of_a_round_that_was_rolled_back_never_name_another_round(database_url: str, tmp_path: Path) -> None:
    ctx = _ctx(database_url, Clock())
    members = _cohort(ctx, tmp_path, 3)
    cache = RoundFactsCache()
    with pytest.raises(RuntimeError), transaction(ctx.sessions) as session:
        ghost = rounds.open_round(session, COHORT, WINDOW, 1, ctx.clock())
        cache.remember(ghost)  # misuse: facts of a round that is never committed
        ghost_id = ghost.round_id
        raise RuntimeError("rolled back")
    real = _open(ctx, WINDOW)  # on SQLite it may well reuse the ghost's id
    assert real.round_id != ghost_id
    data = _inputs(ctx, members, real.round_id)
    with pytest.raises(rounds.RoundNotFound):
        _submit(ctx, cache, members[0], ghost_id, data["t00"])
    assert _submit(ctx, cache, members[0], real.round_id, data["t00"]) == "accepted"
    with ctx.sessions() as session:
        stored = session.scalars(select(ParticipantRecord.round_pk)).all()
    assert stored == [real.id]


def test_a_relayed_round_still_stores_and_checks_every_attestation(database_url: str, tmp_path: Path) -> None:
    ctx = _ctx(database_url, Clock())
    members = _cohort(ctx, tmp_path, 3)
    rid = _open(ctx).round_id
    data = _inputs(ctx, members, rid)
    cache = RoundFactsCache()
    for m in members:  # the last input closes the round
        assert _submit(ctx, cache, m, rid, data[m.tenant_id]) == "accepted"
    atts = {}
    for m in members:
        with ctx.sessions() as session:
            view = rounds.unmask_view(session, cache, m.tenant_id, COHORT, rid)
        assert view.phase == UNMASKING and m.client is not None
        digest = m.client.attest(UnmaskRequest.from_bytes(view.request, m.client.ctx))
        atts[m.tenant_id] = (digest, Attestation(m.tenant_id, digest,
                                                 m.sign(rounds.attestation_message(digest))).to_bytes())
    for m in members[:2]:
        with transaction(ctx.sessions) as session:
            done = rounds.submit_attestation(session, m.tenant_id, COHORT, rid, atts[m.tenant_id][1], cache)
        assert done.relay == b"" and done.stored is None  # t = 3: nothing to relay yet
    # Another replica stores the third attestation; this process learns of it from the database.
    with transaction(ctx.sessions) as session:
        other = rounds.submit_attestation(session, "t02", COHORT, rid, atts["t02"][1], RoundFactsCache())
    assert other.stored is not None and sorted(other.stored) == ["t00", "t01", "t02"]
    with ctx.sessions() as session:
        relay = rounds.unmask_view(session, cache, "t00", COHORT, rid).attestations
    assert relay and cache.relayed(rid) == relay
    # Relay built: the same attestation again is accepted and answered with it, without reading the others ...
    with transaction(ctx.sessions) as session:
        again = rounds.submit_attestation(session, "t01", COHORT, rid, atts["t01"][1], cache)
    assert again.stored is None and again.relay == relay
    # ... and a different one (a fresh signature of the same digest) is still refused, as is a foreign set.
    digest = atts["t01"][0]
    resigned = Attestation("t01", digest, members[1].sign(rounds.attestation_message(digest))).to_bytes()
    with pytest.raises(rounds.ConflictingMessage), transaction(ctx.sessions) as session:
        rounds.submit_attestation(session, "t01", COHORT, rid, resigned, cache)
    forged = Attestation("t01", bytes(32), members[1].sign(rounds.attestation_message(bytes(32)))).to_bytes()
    with pytest.raises(rounds.ReplayedRoundMessage), transaction(ctx.sessions) as session:
        rounds.submit_attestation(session, "t01", COHORT, rid, forged, cache)
    _set_phase(ctx, rid, ABORTED)  # aborted elsewhere: the cached relay does not keep it open
    with pytest.raises(rounds.RoundWasAborted), transaction(ctx.sessions) as session:
        rounds.submit_attestation(session, "t01", COHORT, rid, atts["t01"][1], cache)
