"""Cohort schema versions: created once, immutable, published on rollout."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from server.context import ServerContext
from server.db import transaction
from server.signals.models import SignalSchemaVersion
from server.signals.schemas import current_schema, get_schema, publish_artifact_versions


def test_first_use_creates_version_one_from_the_template(ctx: ServerContext) -> None:
    with transaction(ctx.sessions) as session:
        first = current_schema(session, "c1")
    with transaction(ctx.sessions) as session:
        again = current_schema(session, "c1")
        assert get_schema(session, "c1", 1) == first
        assert get_schema(session, "c1", 2) is None
        assert get_schema(session, "c2", 1) is None
    assert first == again
    assert (first.cohort, first.version, first.dimension("artifact_version").values) == ("c1", 1, ("baseline", "other"))


def test_concurrent_first_use_creates_one_version(ctx: ServerContext) -> None:
    barrier = threading.Barrier(4)
    seen: list[int] = []

    def ask() -> None:
        barrier.wait()
        with transaction(ctx.sessions) as session:
            seen.append(current_schema(session, "c1").version)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ctx.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(SignalSchemaVersion))
    assert seen == [1, 1, 1, 1]
    assert rows == 1


def test_publishing_artifact_versions_adds_a_version_only_when_the_domain_changes(ctx: ServerContext) -> None:
    with transaction(ctx.sessions) as session:
        v2 = publish_artifact_versions(session, "c1", ["baseline", "cand-7"])
        same = publish_artifact_versions(session, "c1", ["baseline", "cand-7"])
    with transaction(ctx.sessions) as session:
        assert current_schema(session, "c1") == v2
        v1 = get_schema(session, "c1", 1)
    assert v1 is not None
    assert same == v2
    assert v2.version == 2
    assert v2.dimension("artifact_version").values == ("baseline", "cand-7", "other")
    assert v2.size == v1.size // 2 * 3
