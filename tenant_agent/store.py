"""The collector's local store: one SQLite file, ``state_dir/collector.db``.

What it holds, and nothing more:

- ``contributions``: per (window, privacy-unit hash, cell) counts. The unit
  hash is a keyed BLAKE2b MAC under a local secret, never the raw id; cells
  point into ``cell_keys``, which hold schema domain values only (labels,
  never free text).
- ``seen_events``: keyed hashes of event ids per open window, so an event a
  sender re-sends after a lost acknowledgement counts once.
- ``windows``: one row per window that received events, with its state
  (open, sealed, withheld).
- ``releases``: sealed DP reports (the outbox), with their idempotency key
  and delivery state.
- ``spends``: the privacy-budget ledger, written in the same transaction as
  the sealed release it pays for.
- ``audit``: the local hash-chained audit log (``aggregation.audit``).
- ``counters`` and ``settings``: local metrics and small persistent values.

Every write is one transaction that starts with ``BEGIN IMMEDIATE``, so two
collector processes on the same file serialize instead of racing.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aggregation.audit import ChainedEntry, chain_next

try:
    import fcntl
except ImportError:  # not POSIX: BEGIN IMMEDIATE alone (correct, possibly unfair)
    fcntl = None  # type: ignore[assignment]

DB_FILE = "collector.db"
UNIT_KEY_FILE = "unit.key"

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


Index("ix_releases_pending", Release.delivered_at, Release.next_attempt_at)


class LedgerSpend(CollectorBase):
    __tablename__ = "spends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, nullable=False)
    rho: Mapped[float] = mapped_column(Float, nullable=False)
    release_key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)


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


WRITE = "fedsignal_write"


class WriterGate:
    """Hands the database write lock out fairly between processes and threads.

    SQLite's busy handler polls with growing sleeps, so a process that writes
    in a tight loop re-takes the lock before a waiting process ever sees it
    free. Writers therefore pass a gate (a thread lock plus ``flock`` on a file
    next to the database) only while they *acquire* the write lock: a writer
    waiting on the database holds the gate, so the busy one queues behind it.
    """

    def __init__(self, path: Path) -> None:
        self._thread_lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire_write_lock(self, conn: Any) -> None:
        with self._thread_lock:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                if fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def make_store_engine(path: Path, gate: WriterGate | None = None) -> Engine:
    """An engine on the SQLite file at ``path``: WAL and a busy timeout.

    Connections marked with the ``fedsignal_write`` execution option begin
    with ``BEGIN IMMEDIATE`` (through ``gate`` when given), so writers
    serialize instead of failing on a lock upgrade; reads begin deferred and
    see a consistent snapshot without taking the write lock.
    """
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 60}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a process crash (kill -9); only power loss
        # could drop the last commits, and the sender then never had an ack
        # it could rely on beyond the OS.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA cache_size=-32768")  # 32 MiB page cache
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        if not conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN")
        elif gate is not None:
            gate.acquire_write_lock(conn)
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class CollectorStore:
    """The engine plus the few queries several modules share."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_FILE
        self._gate = WriterGate(state_dir / (DB_FILE + ".gate"))
        self.engine = make_store_engine(self.path, self._gate)
        with self.transaction() as conn:
            CollectorBase.metadata.create_all(conn)
        self.unit_key = _load_or_create_secret(state_dir / UNIT_KEY_FILE)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One unit of work under the database write lock (BEGIN IMMEDIATE): commit or roll back."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()
        self._gate.close()

    # -- small shared helpers (all take the caller's connection) -------------
    @staticmethod
    def get_setting(conn: Connection, name: str) -> str | None:
        return conn.execute(select(Setting.value).where(Setting.name == name)).scalar_one_or_none()

    @staticmethod
    def put_setting(conn: Connection, name: str, value: str) -> None:
        stmt = sqlite_insert(Setting).values(name=name, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=[Setting.name], set_={"value": value}))

    @staticmethod
    def add_counters(conn: Connection, deltas: dict[str, int]) -> None:
        rows = [{"name": k, "value": v} for k, v in deltas.items() if v]
        if not rows:
            return
        stmt = sqlite_insert(Counter)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Counter.name], set_={"value": Counter.value + stmt.excluded.value}
        )
        conn.execute(stmt, rows)

    @staticmethod
    def counters(conn: Connection) -> dict[str, int]:
        return {name: value for name, value in conn.execute(select(Counter.name, Counter.value))}

    @staticmethod
    def append_audit(conn: Connection, at: str, actor: str, kind: str, payload: Any) -> ChainedEntry:
        """Append one entry to the local audit chain inside the caller's transaction."""
        row = conn.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).first()
        prev = None
        if row is not None:
            prev = ChainedEntry(row.seq, row.at, row.actor, row.kind, row.payload_json, row.prev_hash, row.hash)
        entry = chain_next(prev, at, actor, kind, payload)
        conn.execute(
            insert(AuditRecord),
            {
                "seq": entry.seq,
                "at": entry.at,
                "actor": entry.actor,
                "kind": entry.kind,
                "payload_json": entry.payload_json,
                "prev_hash": entry.prev_hash,
                "hash": entry.hash,
            },
        )
        return entry

    def audit_entries(self) -> list[ChainedEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(AuditRecord).order_by(AuditRecord.seq)).all()
        return [ChainedEntry(r.seq, r.at, r.actor, r.kind, r.payload_json, r.prev_hash, r.hash) for r in rows]


def _load_or_create_secret(path: Path) -> bytes:
    """The local MAC key for privacy-unit and event-id hashes (created once, 0600, race-safe)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
    for _ in range(100):
        data = path.read_bytes()
        if len(data) == 32:
            return data
        # Another process created the file and is still writing it.
        time.sleep(0.01)
    raise RuntimeError(f"{path} is not a 32-byte key; remove it to generate a new one")
