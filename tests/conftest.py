"""Shared fixtures.

``database_url`` runs a test once on SQLite and once on PostgreSQL. The
PostgreSQL run uses ``FEDSIGNAL_TEST_DATABASE_URL``; each test gets its own
schema, dropped afterwards. Without that variable the PostgreSQL runs skip
with a reason, unless ``FEDSIGNAL_REQUIRE_POSTGRES=1`` (set by ``.ci/run``),
which turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid

# Every advisory lock the server takes is checked against server.db.locks' order (on SQLite too).
os.environ["FEDSIGNAL_CHECK_LOCK_ORDER"] = "1"
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.harness import Harness, running_harness

PG_ENV = "FEDSIGNAL_TEST_DATABASE_URL"


def postgres_base_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def require_postgres() -> bool:
    return os.environ.get("FEDSIGNAL_REQUIRE_POSTGRES") == "1"


def _sa_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of this test."""
    base = postgres_base_url()
    if base is None:
        if require_postgres():
            pytest.fail(f"{PG_ENV} is not set but FEDSIGNAL_REQUIRE_POSTGRES=1")
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(_sa_url(base))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    url = _sa_url(base) + f"{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Each test using this runs against both stores."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def harness(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    """A real server (mTLS on loopback) over ``database_url``, with an admin and a probe servicer."""

    with running_harness(database_url, tmp_path / "state") as h:
        yield h


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    """The real server over SQLite only (for tests parametrized on something else, e.g. the collector's store)."""
    with running_harness(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-state") as h:
        yield h
