"""The public facts of one round: who, which window, which arithmetic.

A ``RoundContext`` is what every party must agree on before a round starts.
Its ``digest()`` is bound into every key derivation, every share's AEAD
associated data and every message, so a message or share made for one round
(cohort, schema version, window, round id, roster, modulus, threshold) is
useless in any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from aggregation.secagg._codec import MAX_ID_BYTES, MAX_ITEMS, Reader, Writer
from aggregation.secagg.errors import InvalidRoundParams, MalformedMessage, UnknownParticipant, WrongRound

PUBLIC_KEY_BYTES = 32
_CTX_MAGIC = b"FSC1"
_HEADER_MAGIC = b"FSH1"
_ROSTER_DOMAIN = b"fedsignal/secagg/v1/roster"
_DIGEST_DOMAIN = b"fedsignal/secagg/v1/round-context"
_SURVIVORS_DOMAIN = b"fedsignal/secagg/v1/survivor-set"
#: Largest roster a round accepts (bounded parsing; SecAgg+ rounds of a few thousand are the design point).
MAX_ROSTER = 10_000
MAX_LENGTH = 1 << 21


def _check_id(tenant_id: object, what: str = "tenant id") -> str:
    if not isinstance(tenant_id, str) or not tenant_id:
        raise InvalidRoundParams(f"{what} must be a non-empty string, got {tenant_id!r}")
    if len(tenant_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidRoundParams(f"{what} {tenant_id[:40]!r}... exceeds {MAX_ID_BYTES} UTF-8 bytes")
    return tenant_id


@dataclass(frozen=True)
class RosterEntry:
    """One tenant of the cohort and its long-term X25519 public key (raw 32 bytes).

    The roster is public and signed outside this package; the kernel trusts
    it as given.
    """

    tenant_id: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_id(self.tenant_id)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            raise InvalidRoundParams(
                f"public key of {self.tenant_id!r} must be {PUBLIC_KEY_BYTES} raw bytes (X25519)"
            )


@dataclass(frozen=True)
class RoundContext:
    """Everything public about one secure-aggregation round.

    ``length`` is the number of cells of the window table, ``modulus_bits`` the
    b of Z_{2^b} (see ``modulus_bits()``), ``threshold`` the t below which the
    round aborts (and with which the noise shares are calibrated, see
    ``plan_noise``); t must exceed half the roster (see ``docs/secagg.md``
    for the choice of t against colluding tenants). ``neighbour_degree`` selects the graph: ``None`` picks the
    default (complete up to ``COMPLETE_GRAPH_MAX`` tenants, SecAgg+ sparse
    above), a value >= ``len(roster) - 1`` forces the complete graph. The
    roster is kept sorted by tenant id, so two parties that list the same
    tenants build the same context.
    """

    cohort: str
    schema_version: int
    window_start: int
    round_id: str
    length: int
    modulus_bits: int
    threshold: int
    roster: tuple[RosterEntry, ...]
    neighbour_degree: int | None = None

    def __post_init__(self) -> None:
        _check_id(self.cohort, "cohort")
        _check_id(self.round_id, "round id")
        for name in ("schema_version", "window_start", "length", "modulus_bits", "threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRoundParams(f"{name} must be an integer, got {value!r}")
        if not 0 <= self.schema_version < 2**32:
            raise InvalidRoundParams(f"schema_version {self.schema_version} out of range")
        if not 0 <= self.window_start < 2**63:
            raise InvalidRoundParams(f"window_start {self.window_start} out of range")
        if not 1 <= self.length <= MAX_LENGTH:
            raise InvalidRoundParams(f"length must lie in [1, {MAX_LENGTH}], got {self.length}")
        if not 2 <= self.modulus_bits <= 64:
            raise InvalidRoundParams(f"modulus_bits must lie in [2, 64], got {self.modulus_bits}")
        roster = tuple(sorted(self.roster, key=lambda e: e.tenant_id))
        if not all(isinstance(e, RosterEntry) for e in roster):
            raise InvalidRoundParams("roster entries must be RosterEntry values")
        if len(roster) > MAX_ROSTER:
            raise InvalidRoundParams(f"roster of {len(roster)} tenants exceeds {MAX_ROSTER}")
        ids = [e.tenant_id for e in roster]
        if len(set(ids)) != len(ids):
            raise InvalidRoundParams("roster lists a tenant id twice")
        if len({e.public_key for e in roster}) != len(roster):
            raise InvalidRoundParams("roster lists one public key for two tenants")
        object.__setattr__(self, "roster", roster)
        if not (2 <= self.threshold <= len(roster) and 2 * self.threshold > len(roster)):
            # 2t > n: two survivor sets shown to different tenants can then never both collect t
            # attestations from tenants that each attest once (the consistency check of Bonawitz et al. 2017's
            # active-adversary protocol).
            raise InvalidRoundParams(
                f"threshold must lie in ({len(roster) // 2}, {len(roster)}] (more than half the roster, "
                f"at least 2), got {self.threshold}"
            )
        if self.neighbour_degree is not None and (
            isinstance(self.neighbour_degree, bool)
            or not isinstance(self.neighbour_degree, int)
            or self.neighbour_degree < 2
        ):
            raise InvalidRoundParams(f"neighbour_degree must be an integer >= 2, got {self.neighbour_degree!r}")

    @cached_property
    def tenant_ids(self) -> tuple[str, ...]:
        return tuple(e.tenant_id for e in self.roster)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {tid: i for i, tid in enumerate(self.tenant_ids)}

    def index_of(self, tenant_id: str) -> int:
        """0-based position of ``tenant_id`` in the sorted roster; ``UnknownParticipant`` if absent."""
        try:
            return self._index[tenant_id]
        except (KeyError, TypeError):
            raise UnknownParticipant(f"tenant {tenant_id!r} is not in the roster of round {self.round_id!r}") from None

    def public_key_of(self, tenant_id: str) -> bytes:
        return self.roster[self.index_of(tenant_id)].public_key

    def _write_fields(self, w: Writer) -> None:
        w.text(self.cohort)
        w.u32(self.schema_version)
        w.u64(self.window_start)
        w.text(self.round_id)
        w.u32(self.length)
        w.u8(self.modulus_bits)
        w.u32(self.threshold)
        w.u32(0 if self.neighbour_degree is None else self.neighbour_degree)

    def to_bytes(self) -> bytes:
        w = Writer(_CTX_MAGIC)
        self._write_fields(w)
        w.u32(len(self.roster))
        w.raw(_roster_body(self.roster))
        return w.getvalue()

    @cached_property
    def roster_digest(self) -> bytes:
        """:func:`roster_digest` of this round's roster."""
        return roster_digest(self.roster)

    def header_bytes(self) -> bytes:
        """The context without its roster, which it names by size and :func:`roster_digest`: what a
        server sends a tenant that already holds the roster (``from_header`` rebuilds the context)."""
        w = Writer(_HEADER_MAGIC)
        self._write_fields(w)
        w.u32(len(self.roster))
        w.raw(self.roster_digest)
        return w.getvalue()

    @classmethod
    def from_header(cls, data: bytes, roster: Iterable[RosterEntry]) -> RoundContext:
        """The context of ``header_bytes()`` completed with ``roster``, the one the caller holds.

        ``WrongRound`` when the header names another roster (the caller asks for the whole
        context then); ``MalformedMessage`` for bytes that are no header."""
        r = Reader(data, _HEADER_MAGIC, "RoundContext header")
        fields = _read_fields(r)
        n = r.u32("roster size")
        digest = r.raw(32, "roster digest")
        r.done()
        held = tuple(sorted(roster, key=lambda e: e.tenant_id))
        if n != len(held) or digest != roster_digest(held):
            raise WrongRound("the round context names another roster than the one held")
        return _build(fields, held)

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundContext:
        r = Reader(data, _CTX_MAGIC, "RoundContext")
        fields = _read_fields(r)
        n = r.count("roster", min(MAX_ROSTER, MAX_ITEMS))
        roster = []
        for _ in range(n):
            tid = r.text("tenant_id")
            roster.append((tid, r.raw(PUBLIC_KEY_BYTES, "public_key")))
        r.done()
        try:
            entries = tuple(RosterEntry(t, k) for t, k in roster)
        except InvalidRoundParams as exc:
            raise MalformedMessage(f"RoundContext: {exc}") from exc
        ctx = _build(fields, entries)
        if [e.tenant_id for e in ctx.roster] != [t for t, _ in roster]:
            raise MalformedMessage("RoundContext: roster is not in canonical (sorted) order")
        return ctx

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: the round's identity in every key, AD and message."""
        return self._digest

    # Equality and hashing by digest: the canonical encoding covers every field, and a roster of
    # thousands of entries is then hashed once, not at every cache lookup.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoundContext):
            return NotImplemented
        return self is other or self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    @cached_property
    def _digest(self) -> bytes:
        return hashlib.sha256(_DIGEST_DOMAIN + self.to_bytes()).digest()


def _roster_body(roster: Iterable[RosterEntry]) -> bytes:
    w = Writer(b"")
    for entry in roster:
        w.text(entry.tenant_id)
        w.raw(entry.public_key)
    return w.getvalue()


def roster_digest(roster: Iterable[RosterEntry]) -> bytes:
    """SHA-256 over a domain tag and the canonical encoding of ``roster`` (sorted by tenant id):
    what a tenant sends to say which roster it holds, and what a context header names."""
    entries = sorted(roster, key=lambda e: e.tenant_id)
    return hashlib.sha256(_ROSTER_DOMAIN + len(entries).to_bytes(4, "big") + _roster_body(entries)).digest()


def _read_fields(r: Reader) -> dict[str, object]:
    return {
        "cohort": r.text("cohort"), "schema_version": r.u32("schema_version"), "window_start": r.u64("window_start"),
        "round_id": r.text("round_id"), "length": r.u32("length"), "modulus_bits": r.u8("modulus_bits"),
        "threshold": r.u32("threshold"), "neighbour_degree": r.u32("neighbour_degree") or None,
    }


def _build(fields: dict[str, object], roster: tuple[RosterEntry, ...]) -> RoundContext:
    try:
        return RoundContext(roster=roster, **fields)  # type: ignore[arg-type]
    except InvalidRoundParams as exc:
        raise MalformedMessage(f"RoundContext: {exc}") from exc


def survivor_set_digest(ctx: RoundContext, survivors: Iterable[str]) -> bytes:
    """What a survivor signs to attest the survivor set it was shown (Bonawitz et al. 2017, round 3).

    SHA-256 over a domain tag, the round's digest and the sorted, length-prefixed
    tenant ids; every id must be in the roster.
    """
    ids = sorted(set(survivors))
    index = ctx._index
    for tid in ids:
        if tid not in index:
            ctx.index_of(tid)  # raises UnknownParticipant
    encoded = [tid.encode("utf-8") for tid in ids]
    body = b"".join(len(raw).to_bytes(4, "big") + raw for raw in encoded)
    return hashlib.sha256(_SURVIVORS_DOMAIN + ctx.digest() + len(ids).to_bytes(4, "big") + body).digest()
