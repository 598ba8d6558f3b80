"""Replicas on one PostgreSQL store, killed at the worst moments; and a store that is not there.

- ``kill -9`` of a replica inside a seal (its spend and sealed report written, the ledger's advisory
  lock and the window's row lock held, not committed): the other replica, waiting on that lock, seals
  every window; the ledger spends once per window, the outbox sends each report once, and the table
  each window was released from is the one a single process builds from the same events.
- ``kill -9`` of either replica inside a batch's transaction while the other records: every
  acknowledged event is there, the killed batch is not (nothing half-written), its retry counts once,
  and the table equals a single process's.
- An enrolled state directory pointed at an empty or another PostgreSQL store refuses to start
  (``StoreMissingError``) instead of starting with a full budget; the empty database stays empty.

Needs FEDSIGNAL_TEST_DATABASE_URL (each test gets its own schema).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from aggregation.clock import from_unix
from aggregation.schema import default_schema
from tenant_agent.collector import Collector
from tenant_agent.store import CollectorStore, LedgerSpend, Release, StoreMissingError
from tenant_agent.store_models import LOCK_LEDGER, LOCK_NAMESPACE, SHARED_STORE_MARKER_FILE
from tenant_agent.windows import WindowBook
from tests.harness import harness_for_sealed_store

from .collector.fakes import HOUR, REPO_ROOT, T0, finish, make_config, read_line, remaining_lines
from .replica_worker import LOOP_SIZE, batches, loop_batch

WINDOWS = [int(T0), int(T0 + HOUR), int(T0 + 2 * HOUR)]


def spawn(module: str, *args: str) -> Any:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", f"tests.tenant_agent.{module}", *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def tagged(url: str) -> tuple[str, str]:
    """``url`` with a unique ``application_name``, and that name (to find its backends in ``pg_stat_activity``)."""
    name = "replica-" + uuid.uuid4().hex[:12]
    return f"{url}{'&' if '?' in url else '?'}application_name={name}", name


def waiting_for_the_ledger_lock(url: str, application_name: str) -> int:
    """Backends of ``application_name`` waiting for the ledger's advisory lock.

    (pg_advisory_xact_lock(LOCK_NAMESPACE, LOCK_LEDGER).) Advisory keys are per database, not per
    schema: another test worker's replicas may queue on the same key, so only the named backends count.
    """
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(
                text("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                     "WHERE NOT l.granted AND l.locktype = 'advisory' AND l.classid = :ns AND l.objid = :key "
                     "AND l.objsubid = 2 AND a.application_name = :app"),
                {"ns": LOCK_NAMESPACE, "key": LOCK_LEDGER, "app": application_name},
            ).scalar_one())  # fmt: skip
    finally:
        engine.dispose()


def wait_until(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def single_process_tables(tmp_path: Path, event_batches: list[list[Any]]) -> dict[int, np.ndarray]:
    """The bounded tables one SQLite collector builds from the same events."""
    with Collector(make_config(tmp_path)) as single:
        for batch in event_batches:
            single.record_many(batch)
        with single.store.engine.connect() as conn:
            return {w: WindowBook.bounded_table(conn, w, single.schema) for w in WINDOWS}


def test_a_replica_killed_inside_a_seal_leaves_the_window_to_the_other_sealed_and_spent_once(
    tmp_path: Path, postgres_url: str
) -> None:
    # Two replicas record (half the batches each, sessions spread over both).
    with (
        Collector(make_config(tmp_path / "r0", store_url=postgres_url)) as r0,
        Collector(make_config(tmp_path / "r1", store_url=postgres_url)) as r1,
    ):
        for b, batch in enumerate(batches()):
            (r0, r1)[b % 2].record_many(batch)
    now = str(T0 + 3 * HOUR)
    holder = spawn("replica_crash_worker", "seal_hold", postgres_url, str(tmp_path / "r0"), now)
    other = None
    try:
        read_line(holder, "ready")
        held = int(read_line(holder, "sealing ").split()[1])
        other_url, other_name = tagged(postgres_url)
        other = spawn("replica_crash_worker", "seal", other_url, str(tmp_path / "r1"), now)
        read_line(other, "ready")
        # The other replica queues on the ledger lock.
        wait_until(lambda: waiting_for_the_ledger_lock(postgres_url, other_name) >= 1)
        kill(holder)
        lines = finish(other)
    finally:
        for p in (holder, other):
            if p is not None and p.poll() is None:
                p.kill()
    outcomes = json.loads(next(line for line in lines if line.startswith("[")))
    assert held in WINDOWS
    # The survivor sealed every window, the one the killed replica was sealing included.
    assert sorted(w for w, state, _key in outcomes) == WINDOWS and {s for _w, s, _k in outcomes} == {"sealed"}
    sealed_from = {int(line.split()[1]): np.array(json.loads(line.split(" ", 2)[2]))
                   for line in lines if line.startswith("table ")}  # fmt: skip
    alone = single_process_tables(tmp_path / "single", batches())
    for w in WINDOWS:
        np.testing.assert_array_equal(sealed_from[w], alone[w])
        assert alone[w].sum() > 0

    # The real server (over SQLite): it knows the schema the replicas sealed under, at the windows' time.
    with (
        harness_for_sealed_store(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-state",
                                 schema=default_schema("cohort-a"), at=T0 + 4 * HOUR) as (harness, channel),
        Collector(make_config(tmp_path / "r0", store_url=postgres_url), channel=channel) as r0,
        Collector(make_config(tmp_path / "r1", store_url=postgres_url), channel=channel) as r1,
    ):
        with r0.store.engine.connect() as conn:
            assert CollectorStore.verify_ledger(conn) == len(WINDOWS)  # one spend per window, chain intact
            keys = conn.execute(select(LedgerSpend.release_key)).scalars().all()
            assert sorted(keys) == sorted(key for _w, _s, key in outcomes)
            assert conn.execute(select(func.count()).select_from(Release)).scalar_one() == len(WINDOWS)
        assert r0.close_windows(now=from_unix(T0 + 4 * HOUR)) == []  # nothing left to seal, nothing re-spent
        # Both replicas deliver at once, twice: each report reaches the server once.
        for _ in range(2):
            threads = [threading.Thread(target=r.deliver, kwargs={"now": from_unix(T0 + 4 * HOUR)}) for r in (r0, r1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        assert sorted(r.idempotency_key for r in harness.reports()) == sorted(key for _w, _s, key in outcomes)
        assert len(harness.tap.received()) == len(WINDOWS)
        assert r0.outbox.depth() == 0


@pytest.mark.parametrize("killed", [0, 1])
def test_a_replica_killed_inside_a_batch_loses_no_acknowledged_event_and_half_writes_nothing(
    tmp_path: Path, postgres_url: str, killed: int
) -> None:
    count, hold_at = 30, 4
    survivor = 1 - killed
    procs: dict[int, Any] = {
        killed: spawn("replica_crash_worker", "record_hold", postgres_url, str(tmp_path / f"r{killed}"),
                      str(killed), str(count), str(hold_at)),
        survivor: spawn("replica_worker", "record_loop", postgres_url, str(tmp_path / f"r{survivor}"),
                        str(survivor), str(count)),
    }  # fmt: skip
    acked = {killed: -1, survivor: -1}
    try:
        for p in procs.values():
            read_line(p, "ready")
        for b in range(hold_at):
            acked[killed] = int(read_line(procs[killed], "acked ").split()[1])
            assert acked[killed] == b
        assert int(read_line(procs[killed], "holding ").split()[1]) == hold_at
        kill(procs[killed])
        for line in remaining_lines(procs[killed]):
            if line.startswith("acked "):
                acked[killed] = max(acked[killed], int(line.split()[1]))
        for line in finish(procs[survivor]):
            if line.startswith("acked "):
                acked[survivor] = max(acked[survivor], int(line.split()[1]))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert acked == {killed: hold_at - 1, survivor: count - 1}
    acknowledged = [loop_batch(killed, b) for b in range(hold_at)] + [loop_batch(survivor, b) for b in range(count)]
    with Collector(make_config(tmp_path / "reader", store_url=postgres_url)) as c:
        # Exactly the acknowledged events: the killed batch's rows died with its transaction.
        assert c.status().counters["events_recorded"] == len(acknowledged) * LOOP_SIZE
        retry = c.record_many(loop_batch(killed, hold_at))  # its sender re-sends the unacknowledged batch
        assert (retry.recorded, retry.duplicates) == (LOOP_SIZE, 0)
        again = c.record_many(loop_batch(killed, hold_at - 1))  # a re-sent acknowledged batch counts once
        assert (again.recorded, again.duplicates) == (0, LOOP_SIZE)
        with c.store.engine.connect() as conn:
            combined = {w: WindowBook.bounded_table(conn, w, c.schema) for w in WINDOWS}
    alone = single_process_tables(tmp_path / "single", [*acknowledged, loop_batch(killed, hold_at)])
    for w in WINDOWS:
        np.testing.assert_array_equal(combined[w], alone[w])
    assert combined[int(T0)].sum() > 0


# -- a store that is not there ------------------------------------------------------------


@contextmanager
def another_schema(postgres_url: str) -> Iterator[str]:
    """The URL of one more empty schema of the test database (dropped after)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    base = postgres_url.split("?", 1)[0]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base + "?options=" + quote(f"-csearch_path={schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def tables_in(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_state_directory_of_a_shared_store_refuses_an_empty_database(tmp_path: Path, postgres_url: str) -> None:
    state = tmp_path / "state"
    with Collector(make_config(state, store_url=postgres_url)) as c:
        c.record_many(batches()[0])
        assert c.close_windows(now=from_unix(T0 + HOUR))[0].state == "sealed"  # budget spent
        store_id = c.store.store_id
    assert (state / SHARED_STORE_MARKER_FILE).read_text().strip() == store_id
    assert (state / SHARED_STORE_MARKER_FILE).stat().st_mode & 0o777 == 0o600
    with another_schema(postgres_url) as empty:
        with pytest.raises(StoreMissingError, match="holds no collector store.*full privacy budget"):
            Collector(make_config(state, store_url=empty))
        assert tables_in(empty) == []  # refused before anything was created
        # The message names where, never who: no user or password from the URL.
        with pytest.raises(StoreMissingError) as refused:
            CollectorStore(state, database_url=empty.replace("postgresql+psycopg://postgres@",
                                                             "postgresql+psycopg://postgres:s3cret@"))
        assert "s3cret" not in str(refused.value)
    # The real store still opens, with its spend.
    with Collector(make_config(state, store_url=postgres_url)) as c, c.store.engine.connect() as conn:
        assert CollectorStore.verify_ledger(conn) == 1


def test_a_state_directory_refuses_another_tenants_store(tmp_path: Path, postgres_url: str) -> None:
    with another_schema(postgres_url) as other:
        CollectorStore(tmp_path / "elsewhere", database_url=other).close()  # someone else's store
        CollectorStore(tmp_path / "mine", database_url=postgres_url).close()
        with pytest.raises(StoreMissingError, match="holds store"):
            CollectorStore(tmp_path / "mine", database_url=other)


def test_replicas_share_the_store_identity_and_a_new_replica_adopts_it(tmp_path: Path, postgres_url: str) -> None:
    a = CollectorStore(tmp_path / "a", database_url=postgres_url)
    b = CollectorStore(tmp_path / "b", database_url=postgres_url)  # a replica joining an existing store
    try:
        assert a.store_id == b.store_id and len(a.store_id) == 32
        for name in ("a", "b"):
            assert (tmp_path / name / SHARED_STORE_MARKER_FILE).read_text().strip() == a.store_id
    finally:
        a.close()
        b.close()
    again = CollectorStore(tmp_path / "a", database_url=postgres_url)  # a restart finds its own store
    again.close()
