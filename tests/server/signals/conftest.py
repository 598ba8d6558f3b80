from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.context import ServerContext
from tests.server.signals.helpers import make_context


@pytest.fixture
def ctx(database_url: str, tmp_path: Path) -> Iterator[ServerContext]:
    """A server context on a fresh store (SQLite and PostgreSQL), clock fixed at ``NOW``."""
    context = make_context(database_url, tmp_path / "state")
    try:
        yield context
    finally:
        context.engine.dispose()
