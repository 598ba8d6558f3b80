"""Versioned upgrades of the collector store, applied in place when it opens.

The store's schema version lives in ``settings.store_schema_version``. A store
without it was made before versioning (version 0: fedsignal up to the release
whose store had no version). ``upgrade`` runs every step from the store's
version to ``STORE_SCHEMA_VERSION`` inside the caller's transaction (all or
nothing: a crash mid-upgrade leaves the old store as it was), and refuses a
store made by a newer release. Steps use Alembic's operations (the server's
migration tool) through a migration context on the open connection, so the
same step runs on SQLite and PostgreSQL.

Adding a version: append a step to ``_STEPS`` that moves the store from
version N-1 to N, never edit a released step, and add a fixture test that
upgrades a store of the previous release.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Connection, String, inspect, select, update

from aggregation.audit import ChainedEntry, verify_chain
from tenant_agent.store_models import (
    LEDGER_HEAD,
    AuditRecord,
    CollectorBase,
    LedgerSpend,
    Release,
    StoreIntegrityError,
    get_setting,
    put_setting,
    spend_entry,
)

#: settings key holding the store's schema version.
VERSION_KEY = "store_schema_version"
#: The version this release writes.
STORE_SCHEMA_VERSION = 1


class StoreVersionError(StoreIntegrityError):
    """The store was made by a newer release (or names a version this one cannot read)."""


def store_version(conn: Connection) -> int | None:
    """The store's schema version; ``None`` for an empty database (a new store)."""
    tables = set(inspect(conn).get_table_names())
    if "windows" not in tables:
        return None
    if "settings" not in tables:
        return 0
    value = get_setting(conn, VERSION_KEY)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError as exc:
        raise StoreVersionError(f"store schema version {value!r} is not a number") from exc


def upgrade(conn: Connection) -> int:
    """Create a new store or upgrade an existing one to ``STORE_SCHEMA_VERSION``; return the version it had."""
    found = store_version(conn)
    if found is None:
        CollectorBase.metadata.create_all(conn)
        put_setting(conn, VERSION_KEY, str(STORE_SCHEMA_VERSION))
        return STORE_SCHEMA_VERSION
    if found > STORE_SCHEMA_VERSION:
        raise StoreVersionError(
            f"the collector store has schema version {found}, newer than this release's "
            f"{STORE_SCHEMA_VERSION}: run the release that made it (downgrades are not supported)"
        )
    for version in range(found + 1, STORE_SCHEMA_VERSION + 1):
        _STEPS[version](conn)
        put_setting(conn, VERSION_KEY, str(version))
    return found


def _ops(conn: Connection) -> Operations:
    return Operations(MigrationContext.configure(conn))


def _to_v1(conn: Connection) -> None:
    """Version 1: the record path's batch log, the chained ledger and sealed-report hashes.

    New tables (``contribution_batches``) are created; ``spends`` gains
    ``prev_hash``/``hash`` and is chained in id order, its head recorded;
    ``releases`` gains ``report_sha256``, taken from the ``budget.spend``
    audit entry written when the report was sealed (the audit chain is
    verified first), or from the bytes when no entry names it.
    """
    CollectorBase.metadata.create_all(conn)  # only the tables that are missing
    ops = _ops(conn)
    columns = {c["name"] for c in inspect(conn).get_columns("spends")}
    with ops.batch_alter_table("spends") as batch:
        if "prev_hash" not in columns:
            batch.add_column(Column("prev_hash", String(64), nullable=True))
        if "hash" not in columns:
            batch.add_column(Column("hash", String(64), nullable=True))
    if "report_sha256" not in {c["name"] for c in inspect(conn).get_columns("releases")}:
        with ops.batch_alter_table("releases") as batch:
            batch.add_column(Column("report_sha256", String(64), nullable=True))

    prev = None
    rows = conn.execute(select(LedgerSpend.id, LedgerSpend.at, LedgerSpend.rho, LedgerSpend.release_key)
                        .order_by(LedgerSpend.id)).all()
    for seq, (row_id, at, rho, key) in enumerate(rows, start=1):
        prev = spend_entry(prev, seq, at, rho, key)
        conn.execute(update(LedgerSpend).where(LedgerSpend.id == row_id).values(prev_hash=prev.prev_hash, hash=prev.hash))
    put_setting(conn, LEDGER_HEAD, f"{len(rows)}:{prev.hash if prev else '0' * 64}")

    audit = [r for r in conn.execute(select(AuditRecord).order_by(AuditRecord.seq))]
    entries = [ChainedEntry(r.seq, r.at, r.actor, r.kind, r.payload_json, r.prev_hash, r.hash) for r in audit]
    verdict = verify_chain(entries)
    if not verdict.ok:
        raise StoreIntegrityError(
            f"cannot upgrade the collector store: its audit chain does not verify at entry "
            f"{verdict.first_broken_seq} ({verdict.reason})"
        )
    sealed_hash: dict[str, str] = {}
    for e in entries:
        if e.kind == "budget.spend":
            payload = json.loads(e.payload_json)
            if isinstance(payload, dict) and isinstance(payload.get("report_sha256"), str):
                sealed_hash[str(payload.get("release_key"))] = payload["report_sha256"]
    for key, data in conn.execute(select(Release.release_key, Release.report)).all():
        digest = sealed_hash.get(key, hashlib.sha256(data).hexdigest())
        conn.execute(update(Release).where(Release.release_key == key).values(report_sha256=digest))


_STEPS: dict[int, Callable[[Connection], None]] = {1: _to_v1}
