"""The advisory-lock order check (``FEDSIGNAL_CHECK_LOCK_ORDER=1``, set for the whole suite by conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.db import LockOrderViolation, advisory_lock, locks, make_engine, make_sessionmaker, transaction


def _sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    return make_sessionmaker(engine)


def test_locks_in_order_and_retaken_ones_pass(tmp_path: Path) -> None:
    sessions = _sessions(tmp_path)
    with transaction(sessions) as s:
        advisory_lock(s, locks.rollout_cohort("c"))
        advisory_lock(s, locks.schema("c"))
        advisory_lock(s, locks.AUDIT)
        advisory_lock(s, locks.bundle("c"))
        advisory_lock(s, locks.AUDIT)  # held already: re-entrant, no new wait
        advisory_lock(s, locks.SLA)  # a lock taken alone has no rank


@pytest.mark.parametrize(("first", "second"), [
    (locks.AUDIT, locks.schema("c")),
    (locks.schema("c"), locks.tenant("t")),
    (locks.TRUST_ROOT, locks.AUDIT),
    (locks.bundle("c"), locks.rollout("r")),
])
def test_a_lock_out_of_order_is_refused_and_the_next_transaction_starts_afresh(
        tmp_path: Path, first: int, second: int) -> None:
    sessions = _sessions(tmp_path)
    with pytest.raises(LockOrderViolation, match="see server.db.locks"), transaction(sessions) as s:
        advisory_lock(s, first)
        advisory_lock(s, second)
    with transaction(sessions) as s:  # a new transaction: the order starts again
        advisory_lock(s, second)
        advisory_lock(s, first)
