"""Several collector processes of one tenant on one PostgreSQL store (replicas).

Every process records; one seals each window and the ledger spends once; a
process killed with SIGKILL mid-batch loses nothing it acknowledged; the
combined table equals the one a single process builds from the same events.
Needs FEDSIGNAL_TEST_DATABASE_URL (each test gets its own schema).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from aggregation.clock import from_unix
from tenant_agent.collector import Collector
from tenant_agent.store import CollectorStore, LedgerSpend, Release
from tenant_agent.windows import WindowBook
from tests.harness import Harness

from .collector.fakes import (
    HOUR,
    REPO_ROOT,
    T0,
    finish,
    make_config,
    read_line,
    recent_t0,
    remaining_lines,
    turn,
)
from .replica_worker import LOOP_SIZE, batches, events, loop_batch

WINDOWS = [int(T0), int(T0 + HOUR), int(T0 + 2 * HOUR)]


def spawn(*args: str) -> Any:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tenant_agent.replica_worker", *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def tables(c: Collector) -> dict[int, np.ndarray]:
    with c.store.engine.connect() as conn:
        return {w: WindowBook.bounded_table(conn, w, c.schema) for w in WINDOWS}


def test_two_replicas_record_into_one_table_and_one_seals_each_window(tmp_path: Path, postgres_url: str) -> None:
    go = tmp_path / "go"
    procs = [spawn("record", postgres_url, str(tmp_path / f"r{i}"), str(i), "2", str(go)) for i in range(2)]
    for p in procs:
        read_line(p, "ready")
    go.touch()
    acked = [line for p in procs for line in finish(p) if line.startswith("acked ")]
    assert len(acked) == len(batches())
    with Collector(make_config(tmp_path / "reader", store_url=postgres_url)) as shared:
        combined = tables(shared)
        assert shared.status().counters["events_recorded"] == len(events())
    with Collector(make_config(tmp_path / "single")) as single:
        for batch in batches():
            single.record_many(batch)
        alone = tables(single)
    for w in WINDOWS:
        # The same bounded table: the replicas hash a session with the same (shared) unit key,
        # so a session recorded by both is still one unit under L0 and L∞.
        np.testing.assert_array_equal(combined[w], alone[w])
        assert combined[w].sum() > 0

    go2 = tmp_path / "go2"
    closers = [spawn("close", postgres_url, str(tmp_path / f"r{i}"), str(T0 + 3 * HOUR), str(go2)) for i in range(2)]
    for p in closers:
        read_line(p, "ready")
    go2.touch()
    sealed: list[int] = []
    for p in closers:
        for line in finish(p):
            if line.startswith("["):
                sealed += [w for w, state, _key in json.loads(line) if state == "sealed"]
    assert sorted(sealed) == WINDOWS  # each window sealed by exactly one replica
    with Collector(make_config(tmp_path / "reader", store_url=postgres_url)) as shared:
        with shared.store.engine.connect() as conn:
            assert CollectorStore.verify_ledger(conn) == len(WINDOWS)
            assert conn.execute(select(func.count()).select_from(Release)).scalar_one() == len(WINDOWS)
            keys = conn.execute(select(LedgerSpend.release_key)).scalars().all()
        assert len(set(keys)) == len(WINDOWS)
        assert shared.close_windows(now=from_unix(T0 + 4 * HOUR)) == []


@pytest.mark.parametrize("killed", [0, 1])
def test_sigkill_of_either_replica_mid_batch_loses_no_acknowledged_event(
    tmp_path: Path, postgres_url: str, killed: int
) -> None:
    count = 40
    procs = [spawn("record_loop", postgres_url, str(tmp_path / f"r{i}"), str(i), str(count)) for i in range(2)]
    acked = [-1, -1]
    try:
        for p in procs:
            read_line(p, "ready")
        while acked[killed] < 5:
            acked[killed] = int(read_line(procs[killed], "acked ").split()[1])
        procs[killed].send_signal(signal.SIGKILL)
        procs[killed].wait(timeout=30)
        for line in remaining_lines(procs[killed]):
            if line.startswith("acked "):
                acked[killed] = max(acked[killed], int(line.split()[1]))
        survivor = 1 - killed
        for line in finish(procs[survivor]):
            if line.startswith("acked "):
                acked[survivor] = max(acked[survivor], int(line.split()[1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert acked[1 - killed] == count - 1
    with Collector(make_config(tmp_path / "reader", store_url=postgres_url)) as c:
        recorded = c.status().counters["events_recorded"]
        acknowledged = (acked[0] + 1 + acked[1] + 1) * LOOP_SIZE
        # Every acknowledged batch is there; at most the killed replica's in-flight one besides.
        assert acknowledged <= recorded <= acknowledged + LOOP_SIZE
        # Its sender re-sends what it never saw acknowledged: each event counts once.
        retry = c.record_many(loop_batch(killed, acked[killed] + 1))
        assert retry.recorded + retry.duplicates == LOOP_SIZE
        total = acknowledged + LOOP_SIZE
        assert c.status().counters["events_recorded"] == total
        turns = c.schema.cell_index({"measure": "turns", "intent": "billing", "artifact_version": "baseline"})
        # One session per event: nothing clipped, nothing lost, nothing doubled.
        assert tables(c)[int(T0)][turns] == total
        [outcome] = c.close_windows(now=from_unix(T0 + HOUR))
        assert outcome.state == "sealed"


def test_the_shared_store_keeps_one_unit_key_for_every_replica(tmp_path: Path, postgres_url: str) -> None:
    a = CollectorStore(tmp_path / "a", database_url=postgres_url)
    b = CollectorStore(tmp_path / "b", database_url=postgres_url)
    try:
        assert a.unit_key == b.unit_key and len(a.unit_key) == 32
        assert not (tmp_path / "a" / "unit.key").exists()
    finally:
        a.close()
        b.close()


def _sends_once_while_another_holds_the_sender(harness: Harness, tmp_path: Path, url: str | None) -> None:
    t0 = recent_t0()
    channel = harness.channel(harness.tenant("tenant-1", "cohort-a"))
    with Collector(make_config(tmp_path / ("b" if url else "a"), store_url=url), channel=channel) as b:
        assert b.refresh_schema()  # the cohort's schema, kept in the store both replicas share
        with Collector(make_config(tmp_path / "a", store_url=url)) as a:
            a.record(turn("s1", t0 + 1))
            [outcome] = a.close_windows(now=from_unix(t0 + HOUR))
            with a.store.sender() as sending:
                assert sending
                skipped = b.deliver(now=from_unix(t0 + HOUR))
                assert (skipped.accepted, skipped.pending) == (0, 1)
                assert harness.tap.received() == []
            sent = b.deliver(now=from_unix(t0 + HOUR))
            assert (sent.accepted, sent.pending) == (1, 0)
    channel.close()
    assert [r.idempotency_key for r in harness.reports()] == [outcome.release_key]


def test_one_replica_sends_the_outbox_at_a_time(sqlite_harness: Harness, tmp_path: Path, postgres_url: str) -> None:
    _sends_once_while_another_holds_the_sender(sqlite_harness, tmp_path, postgres_url)


def test_one_process_sends_a_sqlite_outbox_at_a_time(sqlite_harness: Harness, tmp_path: Path) -> None:
    _sends_once_while_another_holds_the_sender(sqlite_harness, tmp_path, None)
