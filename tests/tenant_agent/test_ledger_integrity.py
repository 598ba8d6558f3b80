"""Local integrity of the ledger and the outbox, the clock's high-water mark, file modes, window length."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fedsignal.v1 import common_pb2
from sqlalchemy import delete, func, select, update

from aggregation import dp
from aggregation.budget import DEFAULT_LIFETIME_RHO, BudgetLedger, BudgetPolicy
from aggregation.clock import from_unix
from aggregation.schema import default_schema
from aggregation.taxonomy import Taxonomy
from tenant_agent.collector import Collector
from tenant_agent.config import BudgetConfig, CollectorConfig, ConfigError, ReleaseConfig
from tenant_agent.release import utc
from tenant_agent.store import (
    DB_FILE,
    CollectorStore,
    LedgerSpend,
    Release,
    StoreIntegrityError,
    StoreMissingError,
    Window,
)
from tenant_agent.windows import WindowBook, WindowLengthMismatch
from tests.harness import Harness

from .collector.fakes import HOUR, T0, make_config, turn

DAY = 24 * HOUR


def sealed(tmp_path: Path, windows: int = 2, **overrides: object) -> None:
    """A store with ``windows`` hourly windows sealed (one spend each)."""
    with Collector(make_config(tmp_path, **overrides)) as c:
        c.record_many([turn(f"s{w}-{i}", T0 + w * HOUR + i) for w in range(windows) for i in range(5)])
        outcomes = c.close_windows(now=from_unix(T0 + windows * HOUR))
        assert [o.state for o in outcomes] == ["sealed"] * windows


def spend_count(c: Collector) -> int:
    with c.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LedgerSpend)).scalar_one())


# -- the chained ledger -----------------------------------------------------------


def test_an_altered_spend_is_refused_when_the_store_opens(tmp_path: Path) -> None:
    sealed(tmp_path)
    store = CollectorStore(tmp_path)
    with store.transaction() as conn:
        conn.execute(update(LedgerSpend).where(LedgerSpend.id == 1).values(rho=3e-08))
    store.close()
    with pytest.raises(StoreIntegrityError, match="ledger .* does not verify at spend 1"):
        Collector(make_config(tmp_path))


def test_a_removed_last_spend_is_refused_when_the_store_opens(tmp_path: Path) -> None:
    sealed(tmp_path)
    store = CollectorStore(tmp_path)
    with store.transaction() as conn:
        last = conn.execute(select(func.max(LedgerSpend.id))).scalar_one()
        conn.execute(delete(LedgerSpend).where(LedgerSpend.id == last))
    store.close()
    with pytest.raises(StoreIntegrityError, match="recorded head"):
        Collector(make_config(tmp_path))


def test_the_ledger_chain_extends_across_restarts(tmp_path: Path) -> None:
    sealed(tmp_path)
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("later", T0 + 5 * HOUR))
        assert [o.state for o in c.close_windows(now=from_unix(T0 + 6 * HOUR))] == ["sealed"]
        with c.store.engine.connect() as conn:
            assert CollectorStore.verify_ledger(conn) == 3


# -- sealed reports are checked before they are sent ------------------------------------


def test_altered_report_bytes_that_still_parse_are_not_sent(tmp_path: Path, sqlite_harness: Harness) -> None:
    sealed(tmp_path, windows=1)
    store = CollectorStore(tmp_path)
    with store.transaction() as conn:
        data = conn.execute(select(Release.report)).scalar_one()
        report = common_pb2.DpReport.FromString(data)
        report.cells[0] += 1000  # still a well-formed report
        conn.execute(update(Release).values(report=report.SerializeToString(deterministic=True)))
    store.close()
    channel = sqlite_harness.channel(sqlite_harness.tenant("tenant-1", "cohort-a"))
    with (
        channel,
        Collector(make_config(tmp_path), channel=channel) as c,
        pytest.raises(StoreIntegrityError, match="altered on disk"),
    ):
        c.deliver(now=from_unix(T0 + 2 * HOUR))
    assert sqlite_harness.tap.received() == []
    assert sqlite_harness.reports() == []


def test_verified_report_bytes_returns_the_sealed_bytes(tmp_path: Path) -> None:
    sealed(tmp_path, windows=1)
    with Collector(make_config(tmp_path)) as c, c.store.engine.connect() as conn:
        key, data = conn.execute(select(Release.release_key, Release.report)).one()
        assert c.store.verified_report_bytes(key) == data
        with pytest.raises(StoreIntegrityError, match="no sealed report"):
            c.store.verified_report_bytes("tenant-1/none")


# -- a store that disappeared ------------------------------------------------------------


def test_a_deleted_store_is_a_loud_error_not_a_full_budget(tmp_path: Path) -> None:
    sealed(tmp_path)
    (tmp_path / DB_FILE).unlink()
    with pytest.raises(StoreMissingError, match="full privacy budget"):
        Collector(make_config(tmp_path))


def test_an_enrolled_state_dir_whose_store_and_key_were_deleted_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir(parents=True)
    (creds / "identity.json").write_text('{"tenant_id": "tenant-1", "cohort": "cohort-a"}')
    CollectorStore(tmp_path).close()  # first start after enrollment: a store is created
    assert (creds / "store.created").exists()
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", "unit.key"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StoreMissingError):
        CollectorStore(tmp_path)


def test_a_fresh_state_dir_gets_a_new_store(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path / "new")) as c:
        assert c.budget_status(from_unix(T0)).spent == 0.0


# -- the clock -------------------------------------------------------------------------


def test_a_clock_stepped_back_one_period_does_not_release_the_budget_twice(tmp_path: Path) -> None:
    budget = BudgetConfig(rho_per_period=1.0, period_days=1.0)
    cfg = make_config(tmp_path, budget=budget, release=ReleaseConfig(rho=0.5))
    with Collector(cfg) as c:
        c.record_many([turn(f"s{w}", T0 + w * HOUR + 1) for w in range(2)])
        assert [o.state for o in c.close_windows(now=from_unix(T0 + 2 * HOUR))] == ["sealed", "sealed"]
        # The clock is stepped back one period; events stamped by it fill two more windows.
        back = T0 - DAY
        c.record_many([turn(f"b{w}", back + w * HOUR + 1) for w in range(2)])
        outcomes = c.close_windows(now=from_unix(back + 2 * HOUR))
        assert [o.state for o in outcomes] == ["withheld", "withheld"]
        assert outcomes[0].reason is not None and "behind the latest time this ledger has seen" in outcomes[0].reason
        assert spend_count(c) == 2
        status = c.budget_status(from_unix(back + 2 * HOUR))
        assert status.clock_behind
        # Once the clock has caught up, the period's budget is already spent.
        later = c.close_windows(now=from_unix(T0 + 3 * HOUR))
        assert [o.state for o in later] == ["withheld", "withheld"]
        assert later[0].reason is not None and "privacy budget exhausted" in later[0].reason
        assert spend_count(c) == 2


def test_the_high_water_mark_persists_without_any_spend(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, budget=BudgetConfig(rho_per_period=0.1), release=ReleaseConfig(rho=0.5))
    with Collector(cfg) as c:
        c.record(turn("s1", T0 + 1))
        [first] = c.close_windows(now=from_unix(T0 + DAY))  # over budget: withheld, nothing spent
        assert "privacy budget exhausted" in (first.reason or "")
    with Collector(cfg) as c:
        [again] = c.close_windows(now=from_unix(T0 + 2 * HOUR))
        assert "behind the latest time" in (again.reason or "")
        assert spend_count(c) == 0


# -- budget figures -------------------------------------------------------------------


def test_a_lifetime_cap_ships_by_default_and_status_says_it_in_epsilon(tmp_path: Path) -> None:
    assert BudgetConfig().lifetime_rho == DEFAULT_LIFETIME_RHO == 10 * BudgetConfig().rho_per_period
    assert BudgetConfig(rho_per_period=2.0).lifetime_rho == 20.0
    assert BudgetConfig(lifetime_rho=None).lifetime_rho is None  # no cap only when asked for
    toml = tmp_path / "collector.toml"
    toml.write_text(f'state_dir = "{tmp_path / "state"}"\ntenant_id = "t"\ncohort = "c"\n[budget]\nrho_per_period = 2.0\n')
    assert CollectorConfig.load(toml).budget.lifetime_rho == 20.0
    sealed(tmp_path / "s", windows=1)
    with Collector(make_config(tmp_path / "s")) as c:
        status = c.budget_status(from_unix(T0 + 2 * HOUR))
    assert (status.rho_per_period, status.lifetime_rho, status.spent) == (10.0, DEFAULT_LIFETIME_RHO, 0.5)
    eps = status.in_epsilon(1e-6)
    assert eps.lifetime_cap == pytest.approx(dp.epsilon_at_delta(DEFAULT_LIFETIME_RHO, 1e-6))
    assert eps.period_limit == pytest.approx(dp.epsilon_at_delta(10.0, 1e-6))
    assert eps.period_spent == pytest.approx(dp.epsilon_at_delta(0.5, 1e-6))
    assert 0 < eps.period_spent < eps.period_limit < eps.lifetime_cap  # type: ignore[operator]


# -- file modes ------------------------------------------------------------------------


def test_state_dir_is_0700_and_store_files_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    sealed(state, windows=1)
    with Collector(make_config(state)) as c:
        c.record(turn("open", T0 + 5 * HOUR))
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for p in state.iterdir():
            if p.is_file():
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


# -- the window is the schema's --------------------------------------------------------


def test_a_window_length_that_disagrees_with_the_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="120"):
        Collector(make_config(tmp_path, window_seconds=120))
    # The window book refuses it too, whoever builds one.
    store = CollectorStore(tmp_path / "book")
    try:
        with pytest.raises(WindowLengthMismatch, match="120"):
            WindowBook(store, Taxonomy.load(), lambda: default_schema("cohort-a"), window_seconds=120)
    finally:
        store.close()


def test_a_window_of_another_length_is_withheld_without_a_spend(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record(turn("s1", T0 + 1))
        # The cohort moves to 10-minute windows while the hourly window is open.
        c.adopt_schema(replace(c.schema, window_seconds=600, version=c.schema.version + 1))
        [outcome] = c.close_windows(now=from_unix(T0 + 2 * HOUR))
        assert outcome.state == "withheld"
        assert outcome.reason is not None and "3600 s long" in outcome.reason and "600 s windows" in outcome.reason
        assert spend_count(c) == 0


# -- flush: close the current window now ------------------------------------------------------


def test_force_closes_the_current_window_now(tmp_path: Path) -> None:
    with Collector(make_config(tmp_path)) as c:
        c.record_many([turn("s1", T0 + 10), turn("s2", T0 + 20)])
        assert c.close_windows(now=from_unix(T0 + 30)) == []
        [outcome] = c.flush(now=from_unix(T0 + 30))
        assert (outcome.state, outcome.window_start) == ("sealed", int(T0))
        late = c.record(turn("s3", T0 + 40))
        assert late.late_dropped == 1
        with c.store.engine.connect() as conn:
            assert conn.execute(select(Window.state)).scalars().all() == ["sealed"]


def test_ledger_kernel_status_reports_the_persisted_mark() -> None:
    policy = BudgetPolicy(1.0, timedelta(days=1), None, utc(T0))
    ledger = BudgetLedger(policy, [], high_water=utc(T0 + DAY))
    assert ledger.status(utc(T0)).clock_behind
    assert not ledger.status(utc(T0 + DAY - 60)).clock_behind  # within the default 5-minute skew
