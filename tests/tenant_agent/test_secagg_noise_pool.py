"""The collector's pool of pre-drawn noise shares: one share per window, exact plan match, used once."""

from __future__ import annotations

import numpy as np

from aggregation.secagg import plan_noise
from tenant_agent.secagg import NoisePool


def _plan(n: int = 10, t: int = 7):  # type: ignore[no-untyped-def]
    return plan_noise(20.0, 4, 10, n, t)


def test_a_prefetched_share_is_taken_once_for_its_window_and_plan() -> None:
    pool = NoisePool()
    plan = _plan()
    pool.prefetch(3600, plan, 50)
    share = pool.take(3600, plan, 50)
    assert share is not None and share.shape == (50,) and share.dtype == np.int64
    assert share.std() > 0  # drawn by the plan's sampler, not zeros
    assert pool.take(3600, plan, 50) is None  # never handed out twice
    pool.close()


def test_a_share_for_another_plan_or_length_is_discarded() -> None:
    pool = NoisePool()
    pool.prefetch(3600, _plan(), 50)
    assert pool.take(3600, _plan(n=12, t=9), 50) is None
    assert pool.pending() == []
    pool.prefetch(7200, _plan(), 50)
    assert pool.take(7200, _plan(), 60) is None
    pool.close()


def test_shares_of_past_windows_are_dropped() -> None:
    pool = NoisePool()
    pool.prefetch(3600, _plan(), 20)
    pool.prefetch(7200, _plan(), 20)
    assert pool.take(10800, _plan(), 20) is None
    assert pool.pending() == []
    pool.close()
