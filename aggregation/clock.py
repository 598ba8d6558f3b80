"""The one clock type of fedsignal, on both sides.

A :data:`Clock` is a callable returning the current time as an aware UTC
``datetime``. Every component that needs the time is handed one (the server
context, the collector, the ledger, the revocation cache), so a test passes a
:class:`FakeClock` and the production path stays the tested path. Stores that
key rows by unix seconds convert at their boundary with :func:`to_unix` and
:func:`from_unix`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock, as an aware UTC datetime."""
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is refused (its zone is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} has no time zone; pass an aware UTC datetime")
    return moment.astimezone(UTC)


def to_unix(moment: datetime) -> float:
    """Unix seconds of an aware datetime."""
    return utc(moment).timestamp()


def from_unix(seconds: float) -> datetime:
    """The aware UTC datetime of ``seconds`` since the epoch."""
    return datetime.fromtimestamp(seconds, UTC)


class FakeClock:
    """A clock that moves only when told to (tests, simulations, the demo).

    Thread-safe: a server's worker threads may read it while a test advances it.
    """

    def __init__(self, start: datetime | float = 0.0) -> None:
        self._now = utc(start) if isinstance(start, datetime) else from_unix(float(start))
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move forward by ``seconds`` (never backward: use :meth:`set` for that) and return the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("FakeClock.advance takes a non-negative step; use set() to go back")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime | float) -> None:
        """Jump to ``moment`` (forward or back: a stepped-back clock is a case worth testing)."""
        with self._lock:
            self._now = utc(moment) if isinstance(moment, datetime) else from_unix(float(moment))
