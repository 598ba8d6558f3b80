"""Rounds in the database: open, collect, close, relay, unmask, release into the merged window.

One round per (cohort, window, schema version). Every transition runs in one
transaction holding the round's row lock (``SELECT ... FOR UPDATE`` on
PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite) and first re-reads
the phase, so several replicas may serve and close rounds: a round is closed
once, unmasked once, released once. The kernel's :class:`ServerRound` is pure
and in memory; it is rebuilt from the stored messages whenever the server
needs it (closing, releasing), so a server killed at any point resumes from
what it had acknowledged.

Release: the decoded sum (survivors' scaled tables + noise shares) divided by
the plan's scale factor and rounded, written to :class:`MergedWindow` the way
the merge of local reports writes it (cells, variance, tenants, reports,
generation), with ``tenants`` the round's actual contributors and
``variance`` the exact variance of the released noise,
``|S| sigma_share^2 / s^2`` (plus the rounding's ``1/12`` when s > 1).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Generic, NamedTuple, TypeVar, cast

import numpy as np
from sqlalchemy import Connection, Table, bindparam, func, select, update
from sqlalchemy.orm import Session, defer

from aggregation import dp
from aggregation.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FedsignalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ResourceExhausted,
)
from aggregation.schema import SECURE, SignalSchema
from aggregation.secagg import (
    Attestation,
    MaskedInput,
    NoisePlan,
    RosterEntry,
    RoundContext,
    SecAggError,
    ServerRound,
    UnmaskResponse,
    graph,
    modulus_bits,
    plan_noise,
    survivor_set_digest,
)
from aggregation.secagg import (
    MalformedMessage as KernelMalformed,
)
from aggregation.secagg import (
    WrongRound as KernelWrongRound,
)
from server.audit import append_audit
from server.db import advisory_lock
from server.secagg import roster as roster_mod
from server.secagg.facts import RoundFacts, RoundFactsCache, cache_for
from server.secagg.models import (
    ABORTED,
    COLLECTING,
    DONE,
    UNMASKING,
    ParticipantRecord,
    RosterRecord,
    RoundRecord,
)
from server.signals.models import MergedWindow
from server.signals.schemas import get_schema

_Msg = TypeVar("_Msg")

#: Largest message of any kind a round accepts (a masked input of 2^20 64-bit words plus shares).
MAX_MESSAGE_BYTES = 8 * (1 << 20) + (1 << 20)


@dataclass(frozen=True)
class SecAggSettings:
    """Timing and shape of rounds (server clock)."""

    # Seconds after a round opens during which masked inputs are accepted.
    submit_seconds: float = 60.0
    # Seconds after the survivor set is fixed during which unmask responses are awaited.
    unmask_seconds: float = 60.0
    # t = max(2, ceil(fraction * roster size)): the abort threshold and the noise calibration.
    threshold_fraction: float = 0.7
    # Largest per-tenant cell count the round's modulus has room for (tenants clip above it).
    max_cell_count: int = 1 << 20


DEFAULT_SETTINGS = SecAggSettings()
_settings: dict[int, SecAggSettings] = {}


def configure(server_ctx: object, settings: SecAggSettings) -> None:
    """Use ``settings`` for the rounds of this server context (tests, bench, demo)."""
    _settings[id(server_ctx)] = settings


def settings_for(server_ctx: object) -> SecAggSettings:
    return _settings.get(id(server_ctx), DEFAULT_SETTINGS)


# -- errors (each maps to its own gRPC status in server.secagg.service) ------------------------


class RoundError(FedsignalError):
    """Base of the refusals of this module."""


class RoundNotFound(RoundError, NotFound):
    pass


class CrossCohort(RoundError, PermissionDenied):
    """A round of another cohort than the caller's."""


class SenderMismatch(RoundError, PermissionDenied):
    """A message whose sender is not the authenticated caller."""


class NotInRoster(RoundError, PermissionDenied):
    pass


class ReplayedRoundMessage(RoundError, PreconditionFailed):
    """A message made for another round, window, schema version or cohort."""


class LateMessage(RoundError, DeadlineExceeded):
    """A masked input after the round stopped collecting."""


class ConflictingMessage(RoundError, AlreadyExists):
    """A second, different message of one kind from one tenant."""


class RoundWasAborted(RoundError, Aborted):
    pass


class WrongRoundPhase(RoundError, PreconditionFailed):
    pass


class MalformedRoundMessage(RoundError, InvalidRequest):
    pass


class OversizeMessage(RoundError, ResourceExhausted):
    pass


class RoundUnavailable(RoundError, PreconditionFailed):
    """No round can be opened for this window (schema, mode or roster do not allow it)."""


# -- helpers ------------------------------------------------------------------------------------


def threshold_for(roster_size: int, fraction: float) -> int:
    return max(2, math.ceil(fraction * roster_size - 1e-9))


def _lock_key(cohort: str, window_start: int, schema_version: int) -> int:
    raw = f"fedsignal.secagg:{cohort}:{window_start}:{schema_version}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


@lru_cache(maxsize=256)
def _context(data: bytes) -> RoundContext:
    return RoundContext.from_bytes(data)


_CONTEXTS: OrderedDict[str, RoundContext] = OrderedDict()
_CONTEXTS_LOCK = threading.Lock()


def context_of(row: RoundRecord) -> RoundContext:
    """The round's context, parsed once per process (round ids are random and never reused, and a
    round's context never changes), so handlers need not load the column."""
    with _CONTEXTS_LOCK:
        found = _CONTEXTS.get(row.round_id)
    if found is None:
        found = _remember_context(row.round_id, _context(bytes(row.context)))
    return found


def _remember_context(round_id: str, rctx: RoundContext) -> RoundContext:
    with _CONTEXTS_LOCK:
        _CONTEXTS[round_id] = rctx
        while len(_CONTEXTS) > 512:
            _CONTEXTS.popitem(last=False)
    return rctx


def noise_plan_of(row: RoundRecord, schema: SignalSchema) -> NoisePlan:
    return _plan(row.sigma_central, schema.max_cells_per_unit, schema.max_count_per_cell, row.roster_size,
                 row.threshold, row.delta)


@lru_cache(maxsize=256)
def _plan(sigma: float, l0: int, linf: int, n: int, t: int, delta: float) -> NoisePlan:
    return plan_noise(sigma, l0, linf, n, t, delta)


class _ParsedMessages(Generic[_Msg]):
    """Messages parsed by this process, by their bytes, up to a total size: the handler that
    accepted a message parsed it, and closing and releasing the round would parse it again.
    Kernel messages are immutable, so sharing one is safe. A message names roster positions and
    is parsed against its round's context; its bytes name that context by digest, so a kept parse
    is returned only for the same context (bytes made for another are parsed, and refused, again)."""

    def __init__(self, parse: Callable[[bytes, RoundContext], _Msg], max_bytes: int) -> None:
        self._parse = parse
        self._max = max_bytes
        self._size = 0
        self._entries: OrderedDict[bytes, _Msg] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, data: bytes, rctx: RoundContext) -> _Msg:
        with self._lock:
            found = self._entries.get(data)
            if found is not None and found.context_digest == rctx.digest():  # type: ignore[attr-defined]
                self._entries.move_to_end(data)
                return found
        try:
            msg = self._parse(data, rctx)  # KernelMalformed propagates, and nothing is kept
        except KernelWrongRound as exc:  # its positions name another round's roster
            raise ReplayedRoundMessage(f"message was made for another round, window, schema version or cohort "
                                       f"than {rctx.round_id!r}") from exc
        if len(data) <= self._max // 16:
            with self._lock:
                if data not in self._entries:
                    self._entries[data] = msg
                    self._size += len(data)
                while self._size > self._max:
                    old, _ = self._entries.popitem(last=False)
                    self._size -= len(old)
        return msg


class _ParsedInputs(_ParsedMessages[MaskedInput]):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(MaskedInput.from_bytes, max_bytes)


#: Parse of a masked input's bytes, shared by the message handler, the close and the release.
parsed_input = _ParsedInputs(max_bytes=64 << 20)
#: Parse of an unmask response's bytes, shared by the message handler and the release.
parsed_response = _ParsedMessages(lambda data, _rctx: UnmaskResponse.from_bytes(data), max_bytes=16 << 20)


def aware(value: datetime, like: datetime) -> datetime:
    """``value`` comparable with ``like`` (SQLite returns naive datetimes)."""
    if value.tzinfo is None and like.tzinfo is not None:
        return value.replace(tzinfo=like.tzinfo)
    return value


def _bounded(data: bytes, what: str) -> bytes:
    if len(data) > MAX_MESSAGE_BYTES:
        raise OversizeMessage(f"{what} of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if not data:
        raise MalformedRoundMessage(f"{what} is empty")
    return data


# The statements every round message runs, built once: SQLAlchemy then reuses their compiled form
# without rebuilding them or recomputing their cache keys per call. The message handlers run them
# in Core on the transaction's connection (no ORM object, no unit of work): they read a few small
# columns and write one row. Closing and releasing, once per round, load the ORM objects.
_ROUNDS = cast(Table, RoundRecord.__table__)
_R = _ROUNDS.c
_PARTICIPANTS = cast(Table, ParticipantRecord.__table__)
_P = _PARTICIPANTS.c
_ROSTER = cast(Table, RosterRecord.__table__)
_LOCKED_ROUND = (select(RoundRecord).where(RoundRecord.round_id == bindparam("round_id"))
                 .options(defer(RoundRecord.context)).with_for_update()
                 .execution_options(populate_existing=True))
#: A round's immutable facts (:class:`RoundFacts`), read once per process and round.
_FACT_COLUMNS = (_R.id, _R.round_id, _R.cohort, _R.window_start, _R.window_end, _R.schema_version, _R.context,
                 _R.threshold, _R.roster_size, _R.sigma_central, _R.delta, _R.submit_deadline)
_FACTS = select(*_FACT_COLUMNS).where(_R.round_id == bindparam("round_id"))
FACTS_OF_WINDOW = select(*_FACT_COLUMNS).where(
    _R.cohort == bindparam("cohort"), _R.window_start == bindparam("window"),
    _R.schema_version == bindparam("version"))
#: What moves, re-read by every transition under the round's row lock (``FOR UPDATE``; on SQLite
#: the transaction's ``BEGIN IMMEDIATE`` holds the write lock already and no clause is rendered).
#: By id and round id: a cached id never names another round.
_LOCKED_STATE = select(_R.phase, _R.abort_reason, _R.survivors_json).where(
    _R.id == bindparam("pk"), _R.round_id == bindparam("round_id")).with_for_update()
_PHASE_AND_SURVIVORS = select(_R.phase, _R.abort_reason, _R.survivors_json).where(
    _R.id == bindparam("pk"), _R.round_id == bindparam("round_id"))
PHASE = select(_R.phase).where(_R.id == bindparam("pk"), _R.round_id == bindparam("round_id"))
_PARTICIPANT = select(_P.id, _P.input_digest, _P.attestation, _P.unmask_response).where(
    _P.round_pk == bindparam("pk"), _P.tenant_id == bindparam("tenant"))
#: The caller's input digest (None: no input from it yet) and how many inputs the round holds, in
#: one statement (the inputs of a round are inserted only under its lock, so the count after this
#: transaction's insert is this count plus one).
_DIGEST_AND_INPUTS = select(
    select(_P.input_digest).where(_P.round_pk == bindparam("pk"), _P.tenant_id == bindparam("tenant"))
    .scalar_subquery().label("digest"),
    select(func.count()).select_from(_PARTICIPANTS).where(_P.round_pk == bindparam("pk"))
    .scalar_subquery().label("inputs"))
#: The caller's row and its roster certificate, in one statement.
_MINE_AND_CERTIFICATE = select(
    _P.id, _P.attestation,
    select(_ROSTER.c.certificate_pem).where(_ROSTER.c.tenant_id == bindparam("tenant")).scalar_subquery().label("pem"),
).where(_P.round_pk == bindparam("pk"), _P.tenant_id == bindparam("tenant"))
_INSERT_INPUT = _PARTICIPANTS.insert()
_SET_ATTESTATION = update(_PARTICIPANTS).where(_P.id == bindparam("pid")).values(
    attestation=bindparam("value"))
_SET_RESPONSE = update(_PARTICIPANTS).where(_P.id == bindparam("pid")).values(
    unmask_response=bindparam("value"))
_UNMASK_REQUEST = select(_P.unmask_request).where(_P.round_pk == bindparam("pk"), _P.tenant_id == bindparam("tenant"))
_ATTESTATIONS = select(_P.tenant_id, _P.attestation).where(_P.round_pk == bindparam("pk"), _P.attestation.is_not(None))
_ATTESTATION_COUNT = select(func.count(_P.attestation)).where(_P.round_pk == bindparam("pk"))
_RESPONDERS = select(_P.tenant_id).where(_P.round_pk == bindparam("pk"), _P.unmask_response.is_not(None))
_OPEN_ROUNDS = select(_R.id, _R.round_id, _R.phase, _R.submit_deadline, _R.unmask_deadline, _R.survivors_json).where(
    _R.phase.in_([COLLECTING, UNMASKING]))
_CONTEXT_OF = select(_R.context).where(_R.id == bindparam("pk"))
_CERTIFICATE_OF = select(_ROSTER.c.certificate_pem).where(_ROSTER.c.tenant_id == bindparam("tenant"))
STATUS = select(_R.id, _R.round_id, _R.cohort, _R.window_start, _R.phase, _R.roster_size, _R.threshold,
                 _R.survivors_json, _R.abort_reason).where(_R.round_id == bindparam("round_id"))
COUNTS = select(func.count(), func.count(_P.attestation), func.count(_P.unmask_response)).where(
    _P.round_pk == bindparam("pk"))


def connection_of(session: Session | Connection) -> Connection:
    """The Core connection of ``session``'s transaction (a connection is its own)."""
    return session.connection() if isinstance(session, Session) else session


def _locked_round(session: Session, round_id: str, cohort: str) -> RoundRecord:
    """The round as an ORM object, locked (closing and releasing, which rewrite it and its participants)."""
    row = session.scalars(_LOCKED_ROUND, {"round_id": round_id}).first()
    if row is None:
        raise RoundNotFound(f"no secure-aggregation round {round_id!r}")
    if row.cohort != cohort:
        raise CrossCohort(f"round {round_id!r} belongs to another cohort than the caller's {cohort!r}")
    return row


def _orm_round(session: Session, facts: RoundFacts) -> RoundRecord:
    """The round as an ORM object in this transaction, which holds its lock already (closing and
    releasing), with the context this process parsed already."""
    _remember_context(facts.round_id, facts.rctx)
    return _locked_round(session, facts.round_id, facts.cohort)


def facts_of(conn: Connection, cache: RoundFactsCache, round_id: str, cohort: str) -> RoundFacts:
    """The round's immutable facts (cached; read from ``conn`` once), checked against the caller's cohort.

    ``conn`` sees committed rounds only (a read-only snapshot, or a write transaction that did not open
    the round), so nothing cached here was rolled back; and since a transition re-reads the round by id
    and round id under its lock, even a stale entry could only make it refuse with ``RoundNotFound``."""
    facts = cache.get(round_id)
    if facts is None:
        found = conn.execute(_FACTS, {"round_id": round_id}).first()
        if found is None:
            raise RoundNotFound(f"no secure-aggregation round {round_id!r}")
        facts = cache.remember(found)
    if facts.cohort != cohort:
        raise CrossCohort(f"round {round_id!r} belongs to another cohort than the caller's {cohort!r}")
    return facts


def _locked_state(conn: Connection, facts: RoundFacts) -> Any:
    """The round's phase, abort reason and survivor set, read under the round's row lock."""
    state = conn.execute(_LOCKED_STATE, {"pk": facts.pk, "round_id": facts.round_id}).first()
    if state is None:
        raise RoundNotFound(f"no secure-aggregation round {facts.round_id!r}")
    return state


def _cache_of(conn: Connection, cache: RoundFactsCache | None) -> RoundFactsCache:
    return cache if cache is not None else cache_for(conn.engine)


def _prologue(session: Session, cache: RoundFactsCache | None, tenant_id: str, cohort: str, round_id: str,
              data: bytes, what: str, parse: Callable[[bytes, RoundContext], _Msg],
              sender_of: Callable[[_Msg], str]) -> tuple[Connection, RoundFacts, Any, _Msg]:
    """The common entry of every message handler: size bound, the round locked (and the caller's
    cohort's), the kernel's parse (malformed -> ``MalformedRoundMessage``), the named sender is the caller.
    Returns the transaction's connection, the round's facts and its state read under the lock."""
    _bounded(data, what)
    conn = session.connection()
    facts = facts_of(conn, _cache_of(conn, cache), round_id, cohort)
    state = _locked_state(conn, facts)
    try:
        msg = parse(data, facts.rctx)
    except KernelMalformed as exc:
        raise MalformedRoundMessage(str(exc)) from exc
    if sender_of(msg) != tenant_id:
        raise SenderMismatch(f"{what} sent by {tenant_id!r} names {sender_of(msg)!r}")
    return conn, facts, state, msg


@lru_cache(maxsize=256)
def _survivor_set(rctx: RoundContext, survivors_json: str) -> tuple[frozenset[str], bytes]:
    """The stored survivor set and its digest (parsed and hashed once per round: the key is the stored text)."""
    ids = json.loads(survivors_json)
    return frozenset(ids), survivor_set_digest(rctx, ids)


def _survivors_for(state: Any, round_id: str, rctx: RoundContext, tenant_id: str) -> tuple[frozenset[str], bytes]:
    """The fixed survivor set and its digest; the set must include ``tenant_id`` (attestations and
    unmask responses)."""
    if state.phase == ABORTED:
        raise RoundWasAborted(f"round {round_id!r} was aborted: {state.abort_reason}")
    if state.phase == COLLECTING:
        raise WrongRoundPhase(f"round {round_id!r} has not fixed its survivor set yet")
    survivors, digest = _survivor_set(rctx, state.survivors_json or "[]")
    if tenant_id not in survivors:
        raise NotInRoster(f"{tenant_id!r} is not a survivor of round {round_id!r}")
    return survivors, digest


def _participants(session: Session, row: RoundRecord) -> list[ParticipantRecord]:
    return list(session.scalars(
        select(ParticipantRecord).where(ParticipantRecord.round_pk == row.id).order_by(ParticipantRecord.tenant_id)
    ))


def survivors_of(row: RoundRecord) -> list[str]:
    return list(json.loads(row.survivors_json)) if row.survivors_json else []


# -- open -------------------------------------------------------------------------------------


def open_round(session: Session, cohort: str, window_start: int, schema_version: int, now: datetime,
               settings: SecAggSettings = DEFAULT_SETTINGS) -> RoundRecord:
    """The round of (cohort, window, version), opened now with the cohort's current roster if new."""
    stmt = select(RoundRecord).where(RoundRecord.cohort == cohort, RoundRecord.window_start == window_start,
                                     RoundRecord.schema_version == schema_version)
    row = session.scalars(stmt).first()
    if row is not None:
        return row
    schema = get_schema(session, cohort, schema_version)
    if schema is None:
        raise RoundUnavailable(f"cohort {cohort!r} has no schema version {schema_version}")
    if schema.aggregation_mode != SECURE:
        raise RoundUnavailable(f"cohort {cohort!r} uses {schema.aggregation_mode!r} aggregation, not secure")
    if schema.noise_scale <= 0:
        raise RoundUnavailable(f"schema version {schema_version} of {cohort!r} fixes no noise scale")
    if window_start % schema.window_seconds:
        raise RoundUnavailable(f"window start {window_start} is not aligned to {schema.window_seconds} s windows")
    advisory_lock(session, _lock_key(cohort, window_start, schema_version))
    row = session.scalars(stmt).first()  # another replica may have opened it meanwhile
    if row is not None:
        return row
    entries = roster_mod.active_entries(session, cohort)
    if len(entries) < 2:
        raise RoundUnavailable(f"the roster of {cohort!r} has {len(entries)} tenant(s); a round needs at least 2")
    n = len(entries)
    t = threshold_for(n, settings.threshold_fraction)
    plan = _plan(schema.noise_scale, schema.max_cells_per_unit, schema.max_count_per_cell, n, t, dp.DEFAULT_DELTA)
    bits = modulus_bits(n * plan.scale_factor * settings.max_cell_count, plan.sigma_sum(n))
    round_id = secrets.token_hex(16)
    rctx = RoundContext(
        cohort=cohort, schema_version=schema_version, window_start=window_start, round_id=round_id,
        length=schema.size, modulus_bits=bits, threshold=t,
        roster=tuple(RosterEntry(e.tenant_id, bytes(e.public_key)) for e in entries),
    )
    row = RoundRecord(
        round_id=round_id, cohort=cohort, window_start=window_start,
        window_end=window_start + schema.window_seconds, schema_version=schema_version, phase=COLLECTING,
        context=rctx.to_bytes(), roster_size=n, threshold=t, sigma_central=schema.noise_scale,
        delta=dp.DEFAULT_DELTA, created_at=now, submit_deadline=now + timedelta(seconds=settings.submit_seconds),
    )
    session.add(row)
    session.flush()
    append_audit(session, "server", "secagg.round.opened", {
        "round_id": round_id, "cohort": cohort, "window_start": window_start, "schema_version": schema_version,
        "roster": [e.tenant_id for e in entries], "threshold": t, "modulus_bits": bits,
        "sigma_central": schema.noise_scale, "sigma_share": plan.sigma_share, "scale_factor": plan.scale_factor,
    }, at=now)
    return row


def roster_entries(session: Session, rctx: RoundContext) -> list[RosterRecord]:
    """The stored roster entries (with signatures and certificates) of the round's context."""
    ids = list(rctx.tenant_ids)
    found = {r.tenant_id: r for r in session.scalars(select(RosterRecord).where(RosterRecord.tenant_id.in_(ids)))}
    return [found[t] for t in ids if t in found]


# -- collect ----------------------------------------------------------------------------------


def submit_input(session: Session, tenant_id: str, cohort: str, round_id: str, data: bytes, now: datetime,
                 settings: SecAggSettings = DEFAULT_SETTINGS, cache: RoundFactsCache | None = None) -> str:
    """Store one masked input; "accepted" or "duplicate" (the same bytes again)."""
    conn, facts, state, msg = _prologue(session, cache, tenant_id, cohort, round_id, data, "masked input",
                                        parsed_input, lambda m: m.sender)
    rctx = facts.rctx  # parsed against it: an input of another context was refused as a replay there
    if tenant_id not in rctx.tenant_ids:
        raise NotInRoster(f"{tenant_id!r} is not in the roster of round {round_id!r}")
    digest = hashlib.sha256(data).hexdigest()
    existing = conn.execute(_DIGEST_AND_INPUTS, {"pk": facts.pk, "tenant": tenant_id}).one()
    if existing.digest is not None:
        if existing.digest == digest:
            return "duplicate"
        raise ConflictingMessage(f"{tenant_id!r} already submitted a different masked input to {round_id!r}")
    if state.phase == ABORTED:
        raise RoundWasAborted(f"round {round_id!r} was aborted: {state.abort_reason}")
    if state.phase != COLLECTING or now > aware(facts.submit_deadline, now):
        raise LateMessage(f"round {round_id!r} stopped collecting masked inputs; this tenant is a dropout")
    try:
        ServerRound(rctx).add_input(msg)  # the kernel's own entry checks (shape, shares, holders)
    except SecAggError as exc:
        raise MalformedRoundMessage(str(exc)) from exc
    conn.execute(_INSERT_INPUT, {"round_pk": facts.pk, "tenant_id": tenant_id, "submitted_at": now,
                                 "masked_input": data, "input_digest": digest})
    if existing.inputs + 1 == facts.roster_size:
        close_round(session, _orm_round(session, facts), now, settings)
    return "accepted"


# -- close --------------------------------------------------------------------------------------


@dataclass
class CloseResult:
    phase: str
    survivors: list[str] = field(default_factory=list)
    reason: str | None = None


def _abort(session: Session, row: RoundRecord, now: datetime, reason: str) -> CloseResult:
    row.phase = ABORTED
    row.abort_reason = reason[:500]
    row.finished_at = now
    for p in _participants(session, row):
        p.masked_input = None
        p.unmask_request = None
    append_audit(session, "server", "secagg.round.aborted", {
        "round_id": row.round_id, "cohort": row.cohort, "window_start": row.window_start, "reason": row.abort_reason,
        "roster_size": row.roster_size, "threshold": row.threshold,
    }, at=now)
    from server.secagg import metrics

    metrics.round_finished(row.cohort, ABORTED, 0, 0)
    return CloseResult(ABORTED, reason=reason)


def close_round(session: Session, row: RoundRecord, now: datetime, settings: SecAggSettings | None) -> CloseResult:
    """Fix the survivor set (the caller holds the round's lock); abort below the threshold."""
    if row.phase != COLLECTING:
        return CloseResult(row.phase, survivors_of(row))
    parts = _participants(session, row)
    rctx = context_of(row)
    server = ServerRound(rctx)
    for p in parts:
        assert p.masked_input is not None
        server.add_input(parsed_input(bytes(p.masked_input), rctx))
    try:
        survivors = server.close()
    except SecAggError as exc:
        return _abort(session, row, now, f"{len(parts)} masked inputs, threshold {row.threshold}: {exc}")
    by_tenant = {p.tenant_id: p for p in parts}
    for tid in sorted(survivors):
        by_tenant[tid].unmask_request = server.unmask_request_for(tid).to_bytes()
    row.survivors_json = json.dumps(sorted(survivors))
    row.phase = UNMASKING
    unmask_seconds = (settings or DEFAULT_SETTINGS).unmask_seconds
    row.unmask_deadline = now + timedelta(seconds=unmask_seconds)
    append_audit(session, "server", "secagg.round.closed", {
        "round_id": row.round_id, "cohort": row.cohort, "window_start": row.window_start,
        "survivors": sorted(survivors), "dropouts": sorted(set(rctx.tenant_ids) - survivors),
    }, at=now)
    return CloseResult(UNMASKING, sorted(survivors))


# -- unmask -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmaskView:
    phase: str
    request: bytes
    #: Canonical RelayedAttestations of ``threshold`` attestations (b"" while fewer are in).
    attestations: bytes
    survivors: int
    threshold: int


def unmask_view(session: Session | Connection, cache: RoundFactsCache, tenant_id: str, cohort: str, round_id: str,
                *, want_request: bool = True, want_attestations: bool = True) -> UnmaskView:
    """What a survivor needs to attest and unmask; ``session`` (or a connection) is read-only: it sees
    committed data only."""
    conn = connection_of(session)
    facts = facts_of(conn, cache, round_id, cohort)
    found = conn.execute(_PHASE_AND_SURVIVORS, {"pk": facts.pk, "round_id": round_id}).first()
    if found is None:
        raise RoundNotFound(f"no secure-aggregation round {round_id!r}")
    phase, reason, survivors_json = found
    if phase == ABORTED:
        raise RoundWasAborted(f"round {round_id!r} was aborted: {reason}")
    if phase == COLLECTING:
        return UnmaskView(COLLECTING, b"", b"", 0, facts.threshold)
    survivors, _digest = _survivor_set(facts.rctx, survivors_json or "[]")
    if tenant_id not in survivors:
        raise NotInRoster(f"{tenant_id!r} is not a survivor of round {round_id!r} (it is a dropout)")
    request = b""
    if want_request:
        request = bytes(conn.execute(_UNMASK_REQUEST, {"pk": facts.pk, "tenant": tenant_id}).scalar() or b"")
    relay = b""
    if want_attestations:
        # A client needs t attestations of its set; relaying t keeps the download O(t). Stored
        # attestations never change, so once this process saw t of them it asks no more.
        relay = cache.relayed(round_id) or b""
        if not relay:
            known = cache.attestations(round_id)
            if len(known) < facts.threshold:
                known = {tid: bytes(a or b"") for tid, a in conn.execute(_ATTESTATIONS, {"pk": facts.pk})}
                cache.add_attestations(round_id, known)
            relay = cache.relay(round_id, facts.rctx, facts.threshold, known)
    return UnmaskView(phase, request, relay, len(survivors), facts.threshold)


def attestation_message(digest: bytes) -> bytes:
    return roster_mod.ATTESTATION_DOMAIN + digest


class Attested(NamedTuple):
    """What :func:`submit_attestation` hands the service to relay."""

    #: Every attestation the round holds now, by tenant (this transaction's view: the caller's
    #: included), once it holds at least ``threshold``; None when ``relay`` is set.
    stored: dict[str, bytes] | None
    threshold: int
    rctx: RoundContext
    #: What to relay when ``stored`` is None: the relay of ``threshold`` attestations this process
    #: built for the round already, or b"" while the round holds fewer than ``threshold``.
    relay: bytes | None


def submit_attestation(session: Session, tenant_id: str, cohort: str, round_id: str, data: bytes,
                       cache: RoundFactsCache | None = None) -> Attested:
    """Store the caller's attestation (the same bytes again are accepted once more)."""
    conn, facts, state, att = _prologue(session, cache, tenant_id, cohort, round_id, data, "attestation",
                                        lambda d, _rctx: Attestation.from_bytes(d), lambda a: a.tenant_id)
    _survivors, digest = _survivors_for(state, round_id, facts.rctx, tenant_id)
    if att.digest != digest:
        raise ReplayedRoundMessage(f"attestation of {tenant_id!r} covers another survivor set or round")
    mine = conn.execute(_MINE_AND_CERTIFICATE, {"pk": facts.pk, "tenant": tenant_id}).first()
    pem = mine.pem if mine is not None else conn.execute(_CERTIFICATE_OF, {"tenant": tenant_id}).scalar()
    if pem is None or not roster_mod.verify_ecdsa(bytes(pem), attestation_message(att.digest), att.signature):
        raise MalformedRoundMessage(f"the attestation signature of {tenant_id!r} does not verify")
    assert mine is not None  # a survivor submitted an input
    if mine.attestation is not None:
        if bytes(mine.attestation) != data:
            raise ConflictingMessage(f"{tenant_id!r} already attested round {round_id!r}")
    else:
        conn.execute(_SET_ATTESTATION, {"pid": mine.id, "value": data})
    relay = _cache_of(conn, cache).relayed(round_id)
    if relay is not None:
        return Attested(None, facts.threshold, facts.rctx, relay)
    if conn.execute(_ATTESTATION_COUNT, {"pk": facts.pk}).scalar_one() < facts.threshold:
        return Attested(None, facts.threshold, facts.rctx, b"")  # fewer than t: nothing to relay yet
    stored = {tid: bytes(a or b"") for tid, a in conn.execute(_ATTESTATIONS, {"pk": facts.pk})}
    return Attested(stored, facts.threshold, facts.rctx, None)


def submit_response(session: Session, tenant_id: str, cohort: str, round_id: str, data: bytes, now: datetime,
                    cache: RoundFactsCache | None = None) -> None:
    conn, facts, state, resp = _prologue(session, cache, tenant_id, cohort, round_id, data, "unmask response",
                                         parsed_response, lambda r: r.sender)
    rctx = facts.rctx
    if resp.context_digest != rctx.digest():
        raise ReplayedRoundMessage(f"unmask response was made for another round than {round_id!r}")
    survivors, digest = _survivors_for(state, round_id, rctx, tenant_id)
    if resp.survivors_digest != digest:
        raise ReplayedRoundMessage(f"unmask response of {tenant_id!r} answers another survivor set")
    mine = conn.execute(_PARTICIPANT, {"pk": facts.pk, "tenant": tenant_id}).first()
    assert mine is not None
    if mine.unmask_response is not None:
        if bytes(mine.unmask_response) == data:
            return
        raise ConflictingMessage(f"{tenant_id!r} already answered round {round_id!r}")
    if state.phase != UNMASKING:
        raise LateMessage(f"round {round_id!r} is already released")
    conn.execute(_SET_RESPONSE, {"pid": mine.id, "value": data})
    if _suffice(rctx, survivors, set(conn.execute(_RESPONDERS, {"pk": facts.pk}).scalars())):
        # Release as soon as the responses suffice (the ORM round, locked again in this transaction).
        try_release(session, _orm_round(session, facts), now, final=False)


# -- release --------------------------------------------------------------------------------------


def responders(session: Session | Connection, row: RoundRecord | Any) -> set[str]:
    return set(connection_of(session).execute(_RESPONDERS, {"pk": row.id}).scalars())


def responses_suffice(row: RoundRecord, answered: set[str]) -> bool:
    """The kernel's unmask condition, from the graph alone (no message parsed): every survivor's
    seed has enough answering holders, and every survivor next to a dropped tenant answered."""
    return _suffice(context_of(row), frozenset(survivors_of(row)), answered)


def _suffice(rctx: RoundContext, survivors: frozenset[str], answered: set[str]) -> bool:
    holders, thresholds = _holders_of(rctx)
    if len(answered) < min(thresholds.values()):
        return False  # the common case while responses arrive: no survivor can be unmasked yet
    if any(len(holders[v] & answered) < thresholds[v] for v in survivors):
        return False
    nbrs = graph.neighbours(rctx)
    dropped = set(rctx.tenant_ids) - survivors
    return all(nbrs[d] & survivors <= answered for d in dropped)


@lru_cache(maxsize=64)
def _holders_of(rctx: RoundContext) -> tuple[dict[str, frozenset[str]], dict[str, int]]:
    """Each tenant's share holders (as a set) and share threshold, computed once per round context."""
    ids = rctx.tenant_ids
    return ({v: frozenset(graph.share_holders(rctx, v)) for v in ids},
            {v: graph.share_threshold(rctx, v) for v in ids})


def try_release(session: Session, row: RoundRecord, now: datetime, *, final: bool) -> str:
    """Unmask and release the round if its responses suffice; abort when ``final`` and they do not.

    The caller holds the round's lock. Returns the round's phase afterwards.
    """
    if row.phase != UNMASKING:
        return row.phase
    if not responses_suffice(row, responders(session, row)):
        if final:
            _abort(session, row, now, "unmasking failed: too few unmask responses before the deadline")
            return ABORTED
        return UNMASKING
    schema = get_schema(session, row.cohort, row.schema_version)
    assert schema is not None
    parts = _participants(session, row)
    rctx = context_of(row)
    server = ServerRound(rctx)
    for p in parts:
        assert p.masked_input is not None
        server.add_input(parsed_input(bytes(p.masked_input), rctx))
    survivors = server.close()
    for p in parts:
        if p.unmask_response is not None:
            try:
                server.add_unmask(parsed_response(bytes(p.unmask_response), rctx))
            except SecAggError:
                continue  # a response the kernel refuses counts as missing
    try:
        total = server.result()
    except SecAggError as exc:
        if final:
            _abort(session, row, now, f"unmasking failed: {exc}")
            return ABORTED
        return UNMASKING
    plan = noise_plan_of(row, schema)
    s = plan.scale_factor
    cells = total if s == 1 else np.rint(total / s).astype(np.int64)
    variance = len(survivors) * plan.sigma_share**2 / s**2 + (1.0 / 12.0 if s > 1 else 0.0)
    _write_merged(session, row, schema, cells, variance, len(survivors), now)
    row.phase = DONE
    row.finished_at = now
    for p in parts:
        p.masked_input = None
        p.unmask_request = None
    dropouts = sorted(set(rctx.tenant_ids) - survivors)
    append_audit(session, "server", "secagg.round.released", {
        "round_id": row.round_id, "cohort": row.cohort, "window_start": row.window_start,
        "schema_version": row.schema_version, "contributors": len(survivors), "dropouts": dropouts,
        "variance": variance, "sigma_central": row.sigma_central,
    }, at=now)
    from server.secagg import metrics

    metrics.round_finished(row.cohort, DONE, len(survivors), len(dropouts))
    return DONE


def _write_merged(session: Session, row: RoundRecord, schema: SignalSchema, cells: np.ndarray, variance: float,
                  contributors: int, now: datetime) -> None:
    merged = session.scalars(select(MergedWindow).where(
        MergedWindow.cohort == row.cohort, MergedWindow.window_start == row.window_start,
        MergedWindow.schema_version == row.schema_version).with_for_update()).first()
    if merged is None:
        merged = MergedWindow(cohort=row.cohort, window_start=row.window_start, window_end=row.window_end,
                              schema_version=row.schema_version,
                              cells=np.zeros(schema.size, dtype="<i8").tobytes(), variance=0.0, tenants=0,
                              reports=0, generation=0, updated_at=now)
        session.add(merged)
    total = np.frombuffer(merged.cells, dtype="<i8").copy() + cells.astype("<i8")
    merged.cells = total.tobytes()
    merged.variance = merged.variance + variance
    merged.tenants = merged.tenants + contributors
    merged.reports = merged.reports + contributors
    merged.generation = merged.generation + 1
    merged.updated_at = now
    session.flush()


# -- the periodic job -------------------------------------------------------------------------------


def rounds_needing_work(session: Session | Connection, now: datetime) -> list[int]:
    """Read-only: ids of rounds whose deadline passed or whose responses now suffice (no write lock taken)."""
    conn = connection_of(session)
    due = []
    for row in conn.execute(_OPEN_ROUNDS):
        if row.phase == COLLECTING:
            if now >= aware(row.submit_deadline, now):
                due.append(row.id)
        elif row.unmask_deadline is not None and now >= aware(row.unmask_deadline, now):
            due.append(row.id)
        else:
            rctx = _context_by_id(conn, row.id, row.round_id)
            survivors, _digest = _survivor_set(rctx, row.survivors_json or "[]")
            if _suffice(rctx, survivors, responders(conn, row)):
                due.append(row.id)
    return due


def _context_by_id(conn: Connection, pk: int, round_id: str) -> RoundContext:
    with _CONTEXTS_LOCK:
        found = _CONTEXTS.get(round_id)
    if found is None:
        found = _remember_context(round_id, _context(bytes(conn.execute(_CONTEXT_OF, {"pk": pk}).scalar_one())))
    return found


def due_rounds(session: Session, now: datetime) -> Sequence[RoundRecord]:
    """Rounds whose next step is due, locked; rounds another replica holds are skipped."""
    stmt = (
        select(RoundRecord)
        .where((RoundRecord.phase == UNMASKING)
               | ((RoundRecord.phase == COLLECTING) & (RoundRecord.submit_deadline <= now)))
        .order_by(RoundRecord.id)
        .limit(200)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))
