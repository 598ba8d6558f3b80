"""The collector store's tables, names and small row-level helpers (see ``tenant_agent.store``).

Kept apart from the store's engine and queries so that the versioned
migrations (``tenant_agent.store_migrations``) can use the models while the
store runs the migrations when it opens, without an import cycle.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aggregation.audit import ChainedEntry, chain_next
from aggregation.errors import FedsignalError

DB_FILE = "collector.db"
UNIT_KEY_FILE = "unit.key"
#: Written into the enrollment's credentials once a store exists for it.
CREDENTIALS_DIR = "credentials"
IDENTITY_FILE = "identity.json"
STORE_MARKER_FILE = "store.created"
#: In the state directory of a collector on a shared (PostgreSQL) store: the identity of that store
#: (its ``store_id`` setting), so an empty or another database is refused instead of a full budget.
SHARED_STORE_MARKER_FILE = "shared-store.id"
#: settings key of a shared store's identity (random, made with the store).
STORE_ID_SETTING = "store_id"
#: settings key of the ledger chain's head: "<count>:<hash of the last spend>".
LEDGER_HEAD = "ledger_head"
#: settings key of the ledger's persisted clock high-water mark (unix seconds).
CLOCK_HIGH_WATER = "clock_high_water"

WINDOW_OPEN = "open"
WINDOW_SEALED = "sealed"
WINDOW_WITHHELD = "withheld"


class CollectorBase(DeclarativeBase):
    """Declarative base of the collector's tables (separate from the server's)."""


class CellKey(CollectorBase):
    """Interned cell keys: canonical JSON of dimension → domain value (labels only)."""

    __tablename__ = "cell_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(512), nullable=False, unique=True)


class StoreIntegrityError(FedsignalError):
    """The store's recorded state does not verify (ledger chain, report hash)."""


class StoreUrlError(FedsignalError):
    """``store_url`` names no PostgreSQL database (the shared store of replicas is PostgreSQL only)."""

    exit_code = 2


def store_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a shared store's URL, or None (checked before any connection)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        return (f"store URL {url.split(':', 1)[0]}:… is not PostgreSQL: leave it unset for the SQLite store in "
                "the state directory, or give a postgresql:// URL")
    try:
        make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        return "store URL is not a database URL: give postgresql://user@host/db"
    return None


class StoreMissingError(FedsignalError):
    """An enrolled state directory whose store is gone: refusing to start with a full budget."""


class ContributionBatch(CollectorBase):
    """One recorded batch's contributions to one window (see ``windows.BATCH_DTYPE``)."""

    __tablename__ = "contribution_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    window_start: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    # Events the batch counted in this window (folded into windows.events at sealing).
    events: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Contribution(CollectorBase):
    __tablename__ = "contributions"
    # Clustered on a compact integer key: one B-tree, cheap upserts.
    __table_args__ = {"sqlite_with_rowid": False}

    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Keyed 64-bit hash of the privacy unit's id (see WindowBook.unit_hash).
    unit: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cell_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    # Event time of the first contribution: bounding keeps the earliest cells.
    first_seen: Mapped[float] = mapped_column(Float, nullable=False)


class SeenEvent(CollectorBase):
    """Keyed hash of each recorded event's id, so a resent event counts once."""

    __tablename__ = "seen_events"
    __table_args__ = {"sqlite_with_rowid": False}

    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class Window(CollectorBase):
    __tablename__ = "windows"

    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_end: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=WINDOW_OPEN)
    # Events counted, as of sealing (an open window's are in its contribution batches).
    events: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    withheld_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    release_key: Mapped[str | None] = mapped_column(String(256), nullable=True)


class Release(CollectorBase):
    """A sealed DP report: the outbox row. ``report`` is the exact wire bytes."""

    __tablename__ = "releases"

    release_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    window_end: Mapped[int] = mapped_column(Integer, nullable=False)
    report: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    rho: Mapped[float] = mapped_column(Float, nullable=False)
    sealed_at: Mapped[float] = mapped_column(Float, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # SHA-256 of ``report`` as sealed: checked before every send.
    report_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


Index("ix_releases_pending", Release.delivered_at, Release.next_attempt_at)


class LedgerSpend(CollectorBase):
    __tablename__ = "spends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, nullable=False)
    rho: Mapped[float] = mapped_column(Float, nullable=False)
    release_key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)
    # The spend chain (see ``spend_entry``): hash of the previous spend and of this one.
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditRecord(CollectorBase):
    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40), nullable=False)
    actor: Mapped[str] = mapped_column(String(256), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    payload_json: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class Counter(CollectorBase):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Setting(CollectorBase):
    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)



def spend_entry(prev: ChainedEntry | None, seq: int, at: float, rho: float, release_key: str) -> ChainedEntry:
    """The ledger chain's entry for one spend: the audit kernel over (at, release, rho).

    ``at`` and ``rho`` enter as their ``repr`` (exact for a float), so a
    changed bit in either breaks the chain.
    """
    entry = chain_next(prev, repr(float(at)), release_key, "budget.spend", {"rho": repr(float(rho))})
    if entry.seq != seq:
        raise StoreIntegrityError(f"ledger chain out of order: spend {seq} follows entry {entry.seq - 1}")
    return entry


#: Advisory-lock keys of a PostgreSQL store (one namespace per store; SQLite's
#: BEGIN IMMEDIATE already serializes every writer). Lock order, when a
#: transaction takes several: STORE_UPGRADE, then LEDGER, then AUDIT; row
#: locks on ``windows`` (ascending window_start) come after LEDGER.
LOCK_NAMESPACE = 0x66730000  # "fs\0\0"
LOCK_STORE_UPGRADE = 1
LOCK_LEDGER = 2
LOCK_AUDIT = 3
#: Held for a whole delivery pass (session level, tried, never waited for): one replica sends the outbox.
LOCK_SENDER = 4


def advisory_lock(conn: Connection, key: int) -> None:
    """Take a transaction-scoped advisory lock on a PostgreSQL store (a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, key)))


def get_setting(conn: Connection, name: str) -> str | None:
    return conn.execute(select(Setting.value).where(Setting.name == name)).scalar_one_or_none()


def upsert(conn: Connection):  # type: ignore[no-untyped-def]
    """The dialect's INSERT ... ON CONFLICT constructor for ``conn`` (SQLite or PostgreSQL)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def put_setting(conn: Connection, name: str, value: str) -> None:
    stmt = upsert(conn)(Setting).values(name=name, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[Setting.name], set_={"value": value}))
