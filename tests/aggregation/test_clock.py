"""One clock type: aware UTC datetimes, a fake clock for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from aggregation.clock import FakeClock, from_unix, system_clock, to_unix, utc


def test_system_clock_is_aware_utc() -> None:
    now = system_clock()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_unix_conversion_round_trips_and_refuses_naive_datetimes() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert from_unix(to_unix(moment)) == moment
    assert to_unix(datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))) == to_unix(moment)
    with pytest.raises(ValueError, match="naive"):
        utc(datetime(2026, 1, 2))


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(3600)
    assert clock() == from_unix(3600)
    assert clock.advance(60) == from_unix(3660)
    assert clock.advance(timedelta(hours=1)) == from_unix(7260)
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.set(0)
    assert clock() == from_unix(0)
