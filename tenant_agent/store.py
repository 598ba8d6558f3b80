"""The collector's local store: one SQLite file, ``state_dir/collector.db``.

What it holds, and nothing more:

- ``contribution_batches``: the record path's append log. One row per
  (recorded batch, window): a packed array of (privacy-unit hash, cell id,
  count, first seen) already summed within the batch. Sealing folds a
  window's batches into its bounded table. The unit hash is a keyed BLAKE2b
  MAC under a local secret, never the raw id; cells point into
  ``cell_keys``, which hold schema domain values only (labels, never free
  text).
- ``contributions``: per (window, unit, cell) counts as the store schema
  before version 1 kept them (upserted per contribution); an upgraded store's
  open windows still hold rows here and sealing reads both.
- ``seen_events``: keyed hashes of event ids per open window, so an event a
  sender re-sends after a lost acknowledgement counts once.
- ``windows``: one row per window that received events, with its state
  (open, sealed, withheld).
- ``releases``: sealed DP reports (the outbox), with their idempotency key
  and delivery state.
- ``spends``: the privacy-budget ledger, written in the same transaction as
  the sealed release it pays for. The spends form a hash chain (the audit
  chain's kernel, ``aggregation.audit``) whose head is kept in ``settings``:
  an altered, removed or truncated spend is refused when the store opens.
- ``audit``: the local hash-chained audit log (``aggregation.audit``).
- ``counters`` and ``settings``: local metrics and small persistent values.

Every write is one transaction that starts with ``BEGIN IMMEDIATE``, so two
collector processes on the same file serialize instead of racing.

The store has a schema version (``settings.store_schema_version``) and is
upgraded in place when it opens (``tenant_agent.store_migrations``). The
state directory is 0700 and the store's files 0600: open windows hold per-unit
counts. A store that disappeared from an enrolled state directory is an error,
not a fresh full budget (``StoreMissingError``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select

from aggregation.audit import GENESIS, ChainedEntry, chain_next, verify_chain
from tenant_agent import store_migrations
from tenant_agent.files import FILE_MODE, private_dir, write_atomic
from tenant_agent.store_models import (
    CLOCK_HIGH_WATER,
    CREDENTIALS_DIR,
    DB_FILE,
    IDENTITY_FILE,
    LEDGER_HEAD,
    LOCK_AUDIT,
    LOCK_LEDGER,
    LOCK_NAMESPACE,
    LOCK_SENDER,
    LOCK_STORE_UPGRADE,
    SHARED_STORE_MARKER_FILE,
    STORE_ID_SETTING,
    STORE_MARKER_FILE,
    UNIT_KEY_FILE,
    WINDOW_OPEN,
    WINDOW_SEALED,
    WINDOW_WITHHELD,
    AuditRecord,
    CellKey,
    CollectorBase,
    Contribution,
    ContributionBatch,
    Counter,
    LedgerSpend,
    Release,
    SeenEvent,
    Setting,
    StoreIntegrityError,
    StoreMissingError,
    StoreUrlError,
    Window,
    advisory_lock,
    get_setting,
    put_setting,
    spend_entry,
    store_url_problem,
    upsert,
)

__all__ = [
    "CLOCK_HIGH_WATER", "DB_FILE", "LEDGER_HEAD", "UNIT_KEY_FILE", "WINDOW_OPEN", "WINDOW_SEALED",
    "WINDOW_WITHHELD", "AuditRecord", "CellKey", "CollectorBase", "CollectorStore", "Contribution",
    "ContributionBatch", "Counter", "LedgerSpend", "Release", "SeenEvent", "Setting", "StoreIntegrityError",
    "StoreMissingError", "Window", "WriterGate", "make_store_engine", "spend_entry", "advisory_lock",
    "LOCK_LEDGER",
]  # fmt: skip

try:
    import fcntl
except ImportError:  # not POSIX: BEGIN IMMEDIATE alone (correct, possibly unfair)
    fcntl = None  # type: ignore[assignment]

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


def private_files(*paths: Path) -> None:
    """Make the files that exist among ``paths`` 0600."""
    for p in paths:
        with suppress(FileNotFoundError):
            os.chmod(p, FILE_MODE)


class CollectorStore:
    """The engine plus the few queries several modules share.

    Opening a store creates it (fresh state directory), upgrades it to the
    current schema version, and verifies the ledger chain; it raises
    ``StoreMissingError`` when an enrolled state directory lost its store and
    ``StoreIntegrityError`` when the ledger does not verify.
    """

    def __init__(self, state_dir: Path, *, database_url: str | None = None) -> None:
        self.state_dir = state_dir
        private_dir(state_dir)
        self.path = state_dir / DB_FILE
        self.database_url = database_url
        if database_url is not None:
            problem = store_url_problem(database_url)
            if problem is not None:
                raise StoreUrlError(problem)
            self._open_shared(database_url)
            return
        self.is_shared = False
        marker = state_dir / CREDENTIALS_DIR / STORE_MARKER_FILE
        enrolled = (state_dir / CREDENTIALS_DIR / IDENTITY_FILE).exists()
        if not self.path.exists():
            if marker.exists() or (state_dir / UNIT_KEY_FILE).exists():
                raise StoreMissingError(
                    f"{self.path} is missing but {state_dir} had a store for its enrollment "
                    f"({marker if marker.exists() else state_dir / UNIT_KEY_FILE} exists): starting a new store "
                    "would start with a full privacy budget. Restore collector.db from a backup, or enroll "
                    "again into a new state directory"
                )
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        self._gate: WriterGate | None = WriterGate(state_dir / (DB_FILE + ".gate"))
        self.engine = make_store_engine(self.path, self._gate)
        with self.transaction() as conn:
            store_migrations.upgrade(conn)
        # SQLite makes -wal and -shm with the database's mode; set them anyway.
        private_files(self.path, self.path.with_name(DB_FILE + "-wal"), self.path.with_name(DB_FILE + "-shm"))
        self.unit_key = _load_or_create_secret(state_dir / UNIT_KEY_FILE)
        if enrolled and not marker.exists():
            marker.write_text("a collector store exists for this enrollment; see tenant_agent/store.py\n")
            private_files(marker)
        with self.engine.connect() as conn:
            self.verify_ledger(conn)

    def _open_shared(self, url: str) -> None:
        """A store on PostgreSQL, shared by several collector processes of one tenant.

        The unit key lives in the database (every replica must hash a privacy
        unit the same way, or one unit's events recorded by two replicas would
        escape the contribution bound); writers run under READ COMMITTED and
        take the advisory locks and row locks named in ``store_models``.
        """
        self.is_shared = True
        self._gate = None
        marker = self.state_dir / SHARED_STORE_MARKER_FILE
        recorded = marker.read_text().strip() if marker.exists() else None
        self.engine = create_engine(_sqlalchemy_url(url), pool_pre_ping=True)
        try:
            with self.transaction() as conn:
                advisory_lock(conn, LOCK_STORE_UPGRADE)
                fresh = store_migrations.store_version(conn) is None or get_setting(conn, UNIT_KEY_SETTING) is None
                if fresh and recorded is not None:
                    # Raised before anything is created: the transaction leaves the database as it was.
                    raise StoreMissingError(
                        f"{self.state_dir} recorded shared store {recorded} ({marker}) but the database at "
                        f"{_redacted_url(url)} holds no collector store: starting a new one would start with a "
                        "full privacy budget. Point store_url at the tenant's store (restore it from a backup), "
                        "or enroll again into a new state directory"
                    )
                store_migrations.upgrade(conn)
                if fresh:
                    put_setting(conn, UNIT_KEY_SETTING, secrets.token_bytes(32).hex())
                store_id = get_setting(conn, STORE_ID_SETTING)
                if store_id is None:  # made with the store (or added to a store from before the id)
                    store_id = secrets.token_hex(16)
                    put_setting(conn, STORE_ID_SETTING, store_id)
                if recorded is not None and recorded != store_id:
                    raise StoreMissingError(
                        f"{self.state_dir} recorded shared store {recorded} ({marker}) but the database at "
                        f"{_redacted_url(url)} holds store {store_id}: its ledger is not this collector's. Point "
                        "store_url at the tenant's store, or enroll again into a new state directory"
                    )
        except BaseException:
            self.engine.dispose()
            raise
        if recorded is None:
            write_atomic(marker, (store_id + "\n").encode())
        self.store_id = store_id
        with self.engine.connect() as conn:
            self.unit_key = bytes.fromhex(get_setting(conn, UNIT_KEY_SETTING) or "")
            self.verify_ledger(conn)
        if len(self.unit_key) != 32:
            raise StoreIntegrityError("the shared store's unit key is not 32 bytes")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One unit of work under the database write lock (BEGIN IMMEDIATE): commit or roll back."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()
        if self._gate is not None:
            self._gate.close()

    # -- small shared helpers (all take the caller's connection) -------------
    get_setting = staticmethod(get_setting)
    put_setting = staticmethod(put_setting)

    @staticmethod
    def add_counters(conn: Connection, deltas: dict[str, int]) -> None:
        # Sorted: concurrent writers of a shared store lock the rows in one order.
        rows = [{"name": k, "value": v} for k, v in sorted(deltas.items()) if v]
        if not rows:
            return
        stmt = upsert(conn)(Counter)
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
        advisory_lock(conn, LOCK_AUDIT)
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

    # -- the ledger chain --------------------------------------------------------
    @staticmethod
    def verify_ledger(conn: Connection) -> int:
        """Verify the spend chain against its recorded head; return the number of spends.

        Raises ``StoreIntegrityError`` naming the first spend that does not
        verify, or a missing or extra tail.
        """
        rows = conn.execute(
            select(LedgerSpend.at, LedgerSpend.rho, LedgerSpend.release_key, LedgerSpend.prev_hash, LedgerSpend.hash)
            .order_by(LedgerSpend.id)
        ).all()
        entries = []
        for seq, (at, rho, key, prev_hash, digest) in enumerate(rows, start=1):
            expected = spend_entry(None, 1, at, rho, key)  # fields only; prev/hash come from the rows
            entries.append(
                ChainedEntry(seq, expected.at, key, expected.kind, expected.payload_json, prev_hash or "", digest or "")
            )
        verdict = verify_chain(entries)
        if not verdict.ok:
            raise StoreIntegrityError(
                f"the privacy-budget ledger in the collector store does not verify at spend {verdict.first_broken_seq}: "
                f"{verdict.reason}. A spend was altered or removed; restore collector.db from a backup"
            )
        head = CollectorStore.get_setting(conn, LEDGER_HEAD)
        actual = f"{len(entries)}:{entries[-1].hash if entries else GENESIS}"
        if (head or f"0:{GENESIS}") != actual:
            raise StoreIntegrityError(
                f"the privacy-budget ledger's recorded head ({head}) does not match its spends ({actual}): "
                "spends were removed or added outside the collector; restore collector.db from a backup"
            )
        return len(entries)

    @staticmethod
    def append_spend(conn: Connection, at: float, rho: float, release_key: str) -> ChainedEntry:
        """Append one spend to the chained ledger inside the caller's transaction."""
        head = CollectorStore.get_setting(conn, LEDGER_HEAD) or f"0:{GENESIS}"
        count_text, _, prev_hash = head.partition(":")
        count = int(count_text)
        prev = None if count == 0 else ChainedEntry(count, "", "", "", "", "", prev_hash)
        entry = spend_entry(prev, count + 1, at, rho, release_key)
        conn.execute(
            insert(LedgerSpend),
            {"at": at, "rho": rho, "release_key": release_key, "prev_hash": entry.prev_hash, "hash": entry.hash},
        )
        CollectorStore.put_setting(conn, LEDGER_HEAD, f"{entry.seq}:{entry.hash}")
        return entry

    @staticmethod
    def clock_high_water(conn: Connection) -> float | None:
        value = CollectorStore.get_setting(conn, CLOCK_HIGH_WATER)
        return None if value is None else float(value)

    @staticmethod
    def raise_clock_high_water(conn: Connection, now: float) -> None:
        """Persist ``now`` as the ledger's clock high-water mark if it is later."""
        current = CollectorStore.clock_high_water(conn)
        if current is None or now > current:
            CollectorStore.put_setting(conn, CLOCK_HIGH_WATER, repr(float(now)))

    # -- the outbox's sender ------------------------------------------------------------
    @contextmanager
    def sender(self) -> Iterator[bool]:
        """Try to become the one process that sends the outbox now; yields whether it did.

        A shared store uses a session-level PostgreSQL advisory lock, the
        SQLite store a non-blocking ``flock`` next to the database; either is
        released on exit (and by the operating system or server if the process
        dies). A process that does not get it skips this delivery pass: the
        holder sends every due report, so each goes out once.
        """
        if self.is_shared:
            with self.engine.connect() as conn:
                got = bool(conn.execute(select(func.pg_try_advisory_lock(LOCK_NAMESPACE, LOCK_SENDER))).scalar())
                conn.commit()
                try:
                    yield got
                finally:
                    if got:
                        conn.execute(select(func.pg_advisory_unlock(LOCK_NAMESPACE, LOCK_SENDER)))
                        conn.commit()
            return
        fd = os.open(self.state_dir / (DB_FILE + ".sender"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            got = True
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    got = False
            yield got
        finally:
            os.close(fd)  # releases the flock

    # -- sealed reports --------------------------------------------------------------
    def verified_report_bytes(self, release_key: str, conn: Connection | None = None) -> bytes:
        """The sealed report's exact bytes, after checking them against the hash recorded at sealing.

        Raises ``StoreIntegrityError`` when the bytes changed (or no hash was
        recorded): such a report must not be sent.
        """
        if conn is None:
            with self.engine.connect() as own:
                return self.verified_report_bytes(release_key, own)
        row = conn.execute(
            select(Release.report, Release.report_sha256).where(Release.release_key == release_key)
        ).one_or_none()
        if row is None:
            raise StoreIntegrityError(f"no sealed report {release_key!r} in the store")
        data, recorded = row
        if recorded is None or hashlib.sha256(data).hexdigest() != recorded:
            raise StoreIntegrityError(
                f"sealed report {release_key!r} does not match the hash recorded when it was sealed; "
                "it was altered on disk and will not be sent"
            )
        return bytes(data)

    def audit_entries(self) -> list[ChainedEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(AuditRecord).order_by(AuditRecord.seq)).all()
        return [ChainedEntry(r.seq, r.at, r.actor, r.kind, r.payload_json, r.prev_hash, r.hash) for r in rows]


#: settings key of a shared (PostgreSQL) store's unit key, hex.
UNIT_KEY_SETTING = "unit_key"


def _sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _redacted_url(url: str) -> str:
    """A database URL for a message: host, port and database, never the user or password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(_sqlalchemy_url(url))
    except Exception:  # noqa: BLE001 - only for a message
        return "the configured store_url"
    return f"postgresql://{parsed.host or ''}{f':{parsed.port}' if parsed.port else ''}/{parsed.database or ''}"


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
