"""BundleService.ReportStatus: bounded audit writes and validated strings (issue 13, items 3 and 11)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import bundles_pb2, bundles_pb2_grpc
from sqlalchemy import func, select

from aggregation.clock import FakeClock
from server.app import ADMIN, BUNDLES, ENROLLMENT, SIGNALS
from server.audit import AuditRecord
from server.review.models import TenantBundleStatus
from tests.harness import Harness, start_harness


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def served(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    h = start_harness(database_url, tmp_path / "state", services=[ENROLLMENT, ADMIN, SIGNALS, BUNDLES], clock=clock,
                      status_reports_per_minute=5)
    try:
        yield h
    finally:
        h.running.stop(0)
        h.ctx.engine.dispose()


def _status_entries(h: Harness) -> int:
    with h.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.kind == "bundle.status"))
                   or 0)


def test_a_flapping_collector_is_rate_limited_and_audits_at_most_the_limit(served: Harness, clock: FakeClock) -> None:
    tenant = served.tenant("acme")
    codes = []
    with served.channel(tenant) as ch:
        stub = bundles_pb2_grpc.BundleServiceStub(ch)
        for i in range(20):
            try:
                stub.ReportStatus(bundles_pb2.ReportStatusRequest(active_version=1, healthy=i % 2 == 0,
                                                                  detail="flap"), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes[:5] == [grpc.StatusCode.OK] * 5
        assert set(codes[5:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert _status_entries(served) == 5
        clock.advance(61)
        stub.ReportStatus(bundles_pb2.ReportStatusRequest(active_version=2, healthy=True), timeout=10)
    assert _status_entries(served) == 6


def test_a_nul_byte_in_the_detail_is_invalid_argument_and_stores_nothing(served: Harness) -> None:
    tenant = served.tenant("acme")
    with served.channel(tenant) as ch, pytest.raises(grpc.RpcError) as err:
        bundles_pb2_grpc.BundleServiceStub(ch).ReportStatus(
            bundles_pb2.ReportStatusRequest(active_version=1, healthy=False, detail="bad\x00detail"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in (err.value.details() or "")
    with served.ctx.sessions() as s:
        assert s.get(TenantBundleStatus, "acme") is None
    assert _status_entries(served) == 0
