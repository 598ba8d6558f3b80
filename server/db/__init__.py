"""Server persistence: engine, sessions, schema creation.

SQLite is the embedded default, PostgreSQL the production store. Every
state transition runs in one transaction (:func:`transaction`). On SQLite
each write transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers
queue on the busy timeout instead of failing on a lock upgrade; sessions of a
:func:`make_read_sessionmaker` factory begin a plain (deferred) transaction
instead, a WAL snapshot that neither takes nor waits for the write lock, and
refuse to flush anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from server.db import locks

#: Execution option of the engine behind read-only sessions (see :func:`make_read_sessionmaker`).
READ_ONLY = "fedsignal_read_only"


class Base(DeclarativeBase):
    """Declarative base of every server table (each domain package keeps its own ``models``)."""


def sqlite_file(database: str | None) -> Path | None:
    """The file a SQLite URL's database part names, or None (in memory, or a ``file:`` URI)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def sqlite_file_of(url: URL) -> Path | None:
    """The SQLite file a parsed database URL names, or None (not SQLite, in memory, a ``file:`` URI)."""
    return sqlite_file(url.database) if url.get_backend_name() == "sqlite" else None


def database_error_line(exc: OperationalError) -> str:
    """The driver's first line of a database error (it names host, port and database, never a
    password): what the CLI and the job loop print instead of a traceback."""
    lines = [line.strip() for line in str(exc.orig if exc.orig is not None else exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _private_sqlite_file(database: str | None) -> None:
    path = sqlite_file(database)
    if path is None:
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings fedsignal relies on.

    A SQLite file is created private (0600) before SQLite opens it: it holds every tenant's
    reports. SQLite gives its -wal and -shm files the database file's mode.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        _private_sqlite_file(database)
        # Read sessions no longer queue on the write lock, so more connections are open at once:
        # one per RPC worker and job thread.
        if sqlite_file(database) is not None:  # a file: a queue pool
            kwargs.setdefault("pool_size", 24)
            kwargs.setdefault("max_overflow", 16)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A read-only session's snapshot (WAL readers never block and are never blocked);
            # everything else takes the write lock up front.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class ReadOnlySessionError(RuntimeError):
    """A read-only session was asked to write (a bug in the caller: use :func:`transaction`)."""


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read-only session may not write; use server.db.transaction")


def read_engine_of(engine: Engine) -> Engine:
    """``engine`` for reads only: on SQLite its transactions begin deferred (``BEGIN``: a snapshot,
    no write lock) instead of ``BEGIN IMMEDIATE``."""
    return engine.execution_options(**{READ_ONLY: True})


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads only (on :func:`read_engine_of`): on SQLite a snapshot without the write
    lock, and any flush of a change is refused. Close or roll them back promptly: a long-lived WAL
    snapshot keeps SQLite from checkpointing."""
    factory = sessionmaker(read_engine_of(engine), expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_flush)
    return factory


@contextmanager
def read_connection(read_engine: Engine) -> Iterator[Connection]:
    """A Core connection of ``read_engine`` (from :func:`read_engine_of`) for handlers that read a few
    columns without an ORM session, its transaction rolled back on exit."""
    with read_engine.connect() as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only session (from :func:`make_read_sessionmaker`), its transaction ended on exit."""
    with factory() as session:
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


class LockOrderViolation(RuntimeError):
    """An advisory lock requested out of :mod:`server.db.locks`' order (only with the order check on)."""


def _check_lock_order(session: Session, key: int) -> None:
    rank = locks.rank_of(key)
    if rank is None:
        return
    tx = session.get_transaction()
    while tx is not None and tx.parent is not None:
        tx = tx.parent
    info = session.info
    if info.get("fedsignal.lock_tx") is not tx:
        info["fedsignal.lock_tx"], info["fedsignal.lock_rank"], info["fedsignal.lock_keys"] = tx, 0, set()
    keys = info["fedsignal.lock_keys"]
    if key in keys:
        return  # held already (the locks are re-entrant): no new wait
    keys.add(key)
    held = info["fedsignal.lock_rank"]
    if rank < held:
        raise LockOrderViolation(
            f"advisory lock {key:#x} (rank {rank}) requested after a rank-{held} lock in the same transaction; "
            "see server.db.locks for the order"
        )
    info["fedsignal.lock_rank"] = rank


def advisory_lock(session: Session, key: int) -> None:
    """Serialize a critical section across replicas (PostgreSQL), until commit.

    On SQLite the ``BEGIN IMMEDIATE`` write lock already serializes writers. With
    ``FEDSIGNAL_CHECK_LOCK_ORDER=1`` (the test suite sets it) a lock requested out of
    :mod:`server.db.locks`' order raises :class:`LockOrderViolation`, on either store.
    """
    if os.environ.get("FEDSIGNAL_CHECK_LOCK_ORDER") == "1":
        _check_lock_order(session, key)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
