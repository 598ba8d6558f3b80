"""The collector store upgrades in place: a store made by the release before versioning keeps its state.

``fixtures/store_v0`` was made by the collector of main at 94207de (the last
release without a store version): 49 events in three hourly windows from
``T0``, the first two sealed at ``T0 + 2 h + 61 s`` (rho 0.5 each, tenant-1,
cohort-a), the first of them delivered, the third open with 7 sessions.

The undelivered report goes to the real server (``tests/harness.py``): the server knows the
cohort's schema version 1 the old store sealed under, and its clock reads the fixture's time once
the collector has enrolled, so a window of ``T0`` is as recent to it as it was when sealed.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from fedsignal.v1 import common_pb2
from sqlalchemy import select

from aggregation.audit import verify_chain
from aggregation.clock import from_unix
from aggregation.schema import default_schema
from tenant_agent.collector import Collector
from tenant_agent.store import CollectorStore, Release
from tenant_agent.store_migrations import STORE_SCHEMA_VERSION, VERSION_KEY, StoreVersionError, store_version
from tenant_agent.windows import WindowBook
from tests.harness import harness_for_sealed_store

from .collector.fakes import HOUR, T0, make_config

FIXTURE = Path(__file__).parent / "fixtures" / "store_v0"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(FIXTURE, state)
    return state


def raw_releases(state: Path) -> dict[int, bytes]:
    db = sqlite3.connect(state / "collector.db")
    try:
        return {int(w): bytes(r) for w, r in db.execute("SELECT window_start, report FROM releases")}
    finally:
        db.close()


def test_the_fixture_is_a_store_without_a_version(old_store: Path) -> None:
    db = sqlite3.connect(old_store / "collector.db")
    try:
        assert db.execute("SELECT count(*) FROM settings WHERE name = ?", (VERSION_KEY,)).fetchone() == (0,)
        columns = {row[1] for row in db.execute("PRAGMA table_info(spends)")}
        assert "hash" not in columns
    finally:
        db.close()


def test_a_store_of_the_previous_release_upgrades_keeping_ledger_outbox_and_windows(
    old_store: Path, database_url: str, tmp_path: Path
) -> None:
    before = raw_releases(old_store)
    # The server knows the schema the old store sealed under (cohort-a version 1, local mode), and
    # reads the time the old collector would have delivered at.
    [sealed_under] = {common_pb2.DpReport.FromString(r).schema_version for r in before.values()}
    with (
        harness_for_sealed_store(database_url, tmp_path / "server-state",
                                 schema=default_schema("cohort-a", version=sealed_under),
                                 at=T0 + 4 * HOUR) as (harness, channel),
        Collector(make_config(old_store), channel=channel) as c,
    ):
        with c.store.engine.connect() as conn:
            assert store_version(conn) == STORE_SCHEMA_VERSION
            assert CollectorStore.verify_ledger(conn) == 2
            keys = dict(conn.execute(select(Release.window_start, Release.release_key)).all())
        # Ledger: both spends kept.
        status = c.budget_status(from_unix(T0 + 3 * HOUR))
        assert (status.spent, status.lifetime_spent) == (1.0, 1.0)
        # Windows: two sealed (one delivered), one open with its per-unit rows.
        assert c.status().windows == {"open": 1, "sealed": 2, "withheld": 0, "delivered": 1}
        with c.store.engine.connect() as conn:
            table = WindowBook.bounded_table(conn, int(T0 + 3 * HOUR), c.schema)
        turns = c.schema.cell_index({"measure": "turns", "intent": "billing", "artifact_version": "baseline"})
        assert table[turns] == 7
        assert verify_chain(c.store.audit_entries()).ok
        # Outbox: the undelivered report goes out with its sealed bytes, once.
        assert c.store.verified_report_bytes(keys[int(T0 + HOUR)]) == before[int(T0 + HOUR)]
        result = c.deliver(now=from_unix(T0 + 4 * HOUR))
        assert (result.accepted, result.pending) == (1, 0)
        assert harness.tap.received() == [before[int(T0 + HOUR)]]
        [stored] = harness.reports()
        assert (stored.window_start, stored.schema_version) == (int(T0 + HOUR), sealed_under)
        # The open window seals on the upgraded store and extends the chained ledger.
        [outcome] = c.close_windows(now=from_unix(T0 + 4 * HOUR + 61))
        assert outcome.state == "sealed"
        with c.store.engine.connect() as conn:
            assert CollectorStore.verify_ledger(conn) == 3
        report = common_pb2.DpReport.FromString(c.store.verified_report_bytes(outcome.release_key or ""))
        assert report.window_start == int(T0 + 3 * HOUR)
        assert c.budget_status(from_unix(T0 + 5 * HOUR)).spent == 1.5


def test_an_upgraded_store_opens_again_without_change(old_store: Path) -> None:
    Collector(make_config(old_store)).close()
    after_first = raw_releases(old_store)
    with Collector(make_config(old_store)) as c, c.store.engine.connect() as conn:
        assert store_version(conn) == STORE_SCHEMA_VERSION
        assert CollectorStore.verify_ledger(conn) == 2
    assert raw_releases(old_store) == after_first


def test_an_old_store_with_a_broken_audit_chain_is_not_upgraded(old_store: Path) -> None:
    db = sqlite3.connect(old_store / "collector.db")
    db.execute("UPDATE audit SET payload_json = replace(payload_json, '0.5', '0.0005') WHERE kind = 'budget.spend'")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="audit chain does not verify"):
        Collector(make_config(old_store))
    # All or nothing: the failed upgrade left the store at version 0.
    db = sqlite3.connect(old_store / "collector.db")
    try:
        assert db.execute("SELECT count(*) FROM settings WHERE name = ?", (VERSION_KEY,)).fetchone() == (0,)
    finally:
        db.close()


def test_a_store_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    Collector(make_config(tmp_path)).close()
    db = sqlite3.connect(tmp_path / "collector.db")
    db.execute("UPDATE settings SET value = ? WHERE name = ?", (str(STORE_SCHEMA_VERSION + 1), VERSION_KEY))
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match="newer than this release"):
        Collector(make_config(tmp_path))
