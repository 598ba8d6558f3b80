"""Durable storage of validated reports, with group commit.

Each accepted report is one row plus one ``report.accepted`` audit entry.
The audit chain is a global serialization point (one advisory lock across
replicas), so committing reports one transaction at a time caps ingest at
a few hundred per second. :class:`ReportStore` therefore funnels stores
through one writer thread per process that commits whatever has queued up
(up to ``max_batch`` reports) in a single transaction on a Core connection: one
pipelined insert, one audit lock, one read of the chain's tail, one bulk audit
insert, one commit. A caller's :meth:`ReportStore.store` returns
only after the transaction holding its row committed, so "acknowledged"
still means "durable".

A row the database refuses (it cannot fail validation, but a driver may still
raise) fails only its own report: the batch is retried one report per
transaction, so its batch-mates are stored and acknowledged as usual.

Conflicts never abort a batch: rows go in with ``ON CONFLICT DO NOTHING``
and a row that was not inserted (its key or tenant window already stored,
possibly by the same batch) is reported back as ``None`` for the caller to
resolve.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from aggregation.audit import ChainedEntry, chain_next
from server.audit import AuditRecord
from server.context import ServerContext
from server.db import locks
from server.signals.models import SignalReport

# A writer with nothing to do for this long exits; the next store starts a new one.
IDLE_SECONDS = 5.0
KIND = "report.accepted"


@dataclass
class _Pending:
    row: dict[str, Any]
    actor: str
    audit: dict[str, Any]
    result: Future[int | None]


_COMPILED: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert_statement(dialect: str) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(SignalReport).on_conflict_do_nothing().returning(SignalReport.id, SignalReport.idempotency_key)


_TAIL = select(
    AuditRecord.seq, AuditRecord.at, AuditRecord.actor, AuditRecord.kind, AuditRecord.payload_json,
    AuditRecord.prev_hash, AuditRecord.hash,
).order_by(AuditRecord.seq.desc()).limit(1)
_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_UNREAD: Any = object()  # the audit tail was not read with the insert (SQLite)
_PG_LOCK = "SELECT pg_advisory_xact_lock(%s)"


def _fast_toast_compression(connection: Connection) -> bool:
    """Whether this PostgreSQL can compress new TOAST values with lz4 (14+, built with lz4)."""
    found = connection.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(found)


def _insert_rows(
    connection: Connection, rows: list[dict[str, Any]], lz4: bool = False
) -> tuple[dict[str, int], Any]:
    """Insert ``rows`` skipping conflicts; (idempotency key → new id of each inserted row, audit tail).

    PostgreSQL: psycopg's pipelined ``executemany(returning=True)`` of the one-row
    statement — one network flush for the batch, and one short statement that the
    driver's query cache and server-side preparation keep warm (a multi-row VALUES
    statement is re-parsed by the driver on every batch). The same pipeline then takes
    the audit chain's advisory lock and reads the chain's tail (the row, or None), so
    the batch costs one round trip up to there: PostgreSQL runs a pipeline's statements
    in order and a read-committed statement takes its snapshot when it starts, so the
    tail is read with the lock held, as :func:`server.audit.append_audit` reads it.
    ``lz4``: the transaction compresses the rows' cells with lz4 instead of the default
    pglz (``SET LOCAL default_toast_compression``; same pipeline). A 2,040-cell report
    is a 16 KB bytea that PostgreSQL compresses in the insert: pglz costs ~1.5 ms per
    row, lz4 ~0.1 ms, and this insert is the single writer's critical path. Readers
    are unaffected (each value records its own method).
    SQLite is in-process: one execute per row; the tail is left ``_UNREAD``.
    """
    dialect = connection.dialect
    stmt = _insert_statement(dialect.name)
    inserted: dict[str, int] = {}
    if dialect.name == "postgresql":
        columns = list(rows[0])
        sql = _COMPILED.get((dialect.name, tuple(columns)))
        if sql is None:
            sql = _COMPILED[(dialect.name, tuple(columns))] = str(stmt.compile(dialect=dialect, column_keys=columns))
        tail_sql = _COMPILED.get(("audit-tail", ()))
        if tail_sql is None:
            tail_sql = _COMPILED[("audit-tail", ())] = str(
                _TAIL.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            )
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor, driver.cursor() as lock, driver.cursor() as tail:  # type: ignore[union-attr]
            with driver.pipeline():  # type: ignore[union-attr]
                if lz4:
                    lock.execute("SET LOCAL default_toast_compression = 'lz4'")
                cursor.executemany(sql, [{c: row[c] for c in columns} for row in rows], returning=True)
                lock.execute(_PG_LOCK, (locks.AUDIT,))
                tail.execute(tail_sql)
            while True:
                for report_id, key in cursor.fetchall():
                    inserted.setdefault(key, report_id)
                if not cursor.nextset():
                    break
            return inserted, tail.fetchone()
    for row in rows:
        for report_id, key in connection.execute(stmt, row):
            inserted.setdefault(key, report_id)
    return inserted, _UNREAD


class ReportStore:
    """Stores report rows and their audit entries; thread-safe, one writer thread."""

    def __init__(self, ctx: ServerContext, *, max_batch: int = 256) -> None:
        self._ctx = ctx
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._lz4: bool | None = None  # PostgreSQL: lz4 TOAST compression available (probed once)

    def store(self, row: dict[str, Any], actor: str, audit: dict[str, Any]) -> int | None:
        """Insert ``row`` and audit it; the new report id, or None when a stored report conflicts.

        ``audit`` is the payload of the ``report.accepted`` entry; its
        ``report_id`` is filled in. Raises whatever the database raised.
        """
        pending = _Pending(row, actor, audit, Future())
        with self._lock:
            self._queue.put(pending)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="fedsignal-report-writer", daemon=True)
                self._writer.start()
        return pending.result.result()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._writer = None
                        return
                continue
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            ids = self._write(batch)
        except Exception as exc:
            if len(batch) > 1:
                # One bad row must not fail its batch-mates: the batch rolled back as a whole,
                # so each report is written again in its own transaction and only the one(s)
                # the database refuses learn of it.
                for p in batch:
                    self._commit([p])
                return
            batch[0].result.set_exception(exc)  # nothing was acknowledged
            return
        except BaseException as exc:
            for p in batch:
                p.result.set_exception(exc)
            raise
        for p, report_id in zip(batch, ids, strict=True):
            p.result.set_result(report_id)

    def _write(self, batch: list[_Pending]) -> list[int | None]:
        with self._ctx.engine.begin() as connection:
            if self._lz4 is None:
                self._lz4 = connection.dialect.name == "postgresql" and _fast_toast_compression(connection)
            inserted, tail = _insert_rows(connection, [p.row for p in batch], self._lz4)
            ids: list[int | None] = []
            accepted: list[tuple[_Pending, int]] = []
            for p in batch:
                report_id = inserted.pop(p.row["idempotency_key"], None)  # a repeated key: only its first wins
                ids.append(report_id)
                if report_id is not None:
                    accepted.append((p, report_id))
            # Inside the same transaction: a report is never stored without its audit entry.
            _audit_accepted(connection, accepted, tail)
        return ids



def _audit_accepted(connection: Connection, accepted: list[tuple[_Pending, int]], tail: Any = _UNREAD) -> None:
    """One ``report.accepted`` entry per report, chained in one go.

    Same protocol as :func:`server.audit.append_audit` (the chain's advisory lock,
    held until commit, then the tail read under it; ``tail`` when the insert's
    pipeline already did both), done once per batch in Core:
    the entries follow the tail with the chain kernel and go in as one bulk insert,
    so a batch costs a fixed number of round trips.
    """
    if not accepted:
        return
    if tail is _UNREAD:
        if connection.dialect.name == "postgresql":
            connection.execute(_LOCK, {"k": locks.AUDIT})  # SQLite: BEGIN IMMEDIATE already serializes writers
        tail = connection.execute(_TAIL).first()
    prev: ChainedEntry | None = ChainedEntry(*tail) if tail is not None else None
    entries = []
    for p, report_id in accepted:
        payload = {**p.audit, "report_id": str(report_id)}
        at = p.row["received_at"].astimezone(UTC).isoformat(timespec="microseconds")  # as append_audit writes it
        prev = chain_next(prev, at, p.actor, KIND, payload)
        entries.append(
            {"seq": prev.seq, "at": prev.at, "actor": prev.actor, "kind": prev.kind,
             "payload_json": prev.payload_json, "prev_hash": prev.prev_hash, "hash": prev.hash}
        )
    connection.execute(insert(AuditRecord), entries)
