"""Read-only sessions: a snapshot that never takes (or waits for) SQLite's write lock, and that refuses to write."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from server.db import (
    ReadOnlySessionError,
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
    read_only,
    transaction,
)
from server.identity.models import TenantRecord
from server.migrate import init_db
from server.secagg.facts import RoundFactsCache, cache_for
from server.secagg.models import COLLECTING, RoundRecord

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _tenant(tid: str) -> TenantRecord:
    return TenantRecord(tenant_id=tid, cohort="retail", created_at=NOW)


def test_a_read_only_session_refuses_to_write_and_keeps_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    reads = make_read_sessionmaker(engine)
    with pytest.raises(ReadOnlySessionError), read_only(reads) as session:
        session.add(_tenant("t-new"))
        session.flush()
    with read_only(reads) as session:
        assert session.scalar(select(func.count()).select_from(TenantRecord)) == 0
    engine.dispose()


def test_on_sqlite_a_reader_neither_waits_for_nor_blocks_a_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    init_db(engine)
    writes, reads = make_sessionmaker(engine), make_read_sessionmaker(engine)
    with transaction(writes) as session:
        session.add(_tenant("t1"))
    seen: list[int] = []
    with transaction(writes) as session:  # holds the write lock (BEGIN IMMEDIATE) until the block ends
        session.add(_tenant("t2"))
        session.flush()

        def reader() -> None:
            with read_only(reads) as rs:
                seen.append(int(rs.scalar(select(func.count()).select_from(TenantRecord)) or 0))

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(10)  # a reader that queued on the write lock would still be waiting here
        assert not thread.is_alive()
        assert seen == [1]  # its snapshot: the committed row only, not the writer's pending one
    with read_only(reads) as rs:  # the writer committed after the reader (WAL: readers see snapshots)
        assert rs.scalar(select(func.count()).select_from(TenantRecord)) == 2
        assert rs.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def _round(pk: int, rid: str, window: int) -> RoundRecord:
    from aggregation.secagg import RosterEntry, RoundContext

    rctx = RoundContext(cohort="retail", schema_version=1, window_start=window, round_id=rid, length=4,
                        modulus_bits=32, threshold=2,
                        roster=(RosterEntry("a", bytes(32)), RosterEntry("b", bytes([1]) * 32)))
    return RoundRecord(id=pk, round_id=rid, cohort="retail", window_start=window, window_end=window + 3600,
                       schema_version=1, phase=COLLECTING, context=rctx.to_bytes(), roster_size=2, threshold=2,
                       sigma_central=1.0, delta=1e-9, created_at=NOW, submit_deadline=NOW)


def test_the_round_facts_cache_is_bounded_and_per_engine(tmp_path: Path) -> None:
    cache = RoundFactsCache(limit=2)
    for i in range(3):
        cache.remember(_round(i, f"r{i}", 3600 * i))
        cache.add_attestations(f"r{i}", {"a": b"att"})
    assert cache.get("r0") is None and cache.for_window("retail", 0, 1) is None  # evicted, with its attestations
    assert cache.attestations("r0") == {}
    facts = cache.for_window("retail", 3600 * 2, 1)
    assert facts is not None and facts.round_id == "r2" and facts.rctx.tenant_ids == ("a", "b")
    assert cache.attestations("r2") == {"a": b"att"}
    cache.add_attestations("unknown", {"a": b"x"})  # a round it does not hold: nothing kept
    assert cache.attestations("unknown") == {}
    one, two = make_engine(f"sqlite:///{tmp_path / 'a.db'}"), make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    assert cache_for(one) is cache_for(one) and cache_for(one) is not cache_for(two)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_store_still_opens_and_reads(url: str) -> None:
    engine = make_engine(url)  # its single-connection pool takes no queue-pool sizes
    with read_only(make_read_sessionmaker(engine)) as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
