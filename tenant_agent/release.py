"""Sealing windows: the write-ahead DP release under the budget ledger.

A due window is sealed in ONE store transaction (``BEGIN IMMEDIATE``): load
every spend (the chained ledger, verified), spend through
``BudgetLedger.spend`` (its checks: period budget, lifetime cap, the clock's
high-water mark, one charge per release key), draw the noise with OpenDP,
write the spend, the sealed report (exact wire bytes, their SHA-256 and the
idempotency key) and an audit entry, mark the window sealed and forget its
per-unit rows, commit. So:

- a crash before the commit leaves no trace of the draw (nothing left the
  process), a crash after it leaves a sealed report that is only ever
  re-sent, never re-drawn;
- two collector processes on one store serialize on the write lock and the
  second sees the first's spend, so they cannot overspend;
- a window the ledger refuses is kept, marked withheld with the ledger's
  message (remaining budget, renewal time, or a clock behind the ledger's
  high-water mark), and retried on the next close;
- a window whose length is not the schema's is withheld without a spend (the
  server would refuse its report, so the budget must not pay for it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

from fedsignal.v1 import common_pb2
from sqlalchemy import Connection, insert, select

from aggregation import dp
from aggregation.budget import BudgetExceeded, BudgetLedger, BudgetPolicy, Spend
from aggregation.schema import SECURE, SignalSchema
from tenant_agent.config import ReleaseConfig
from tenant_agent.store import (
    WINDOW_OPEN,
    WINDOW_SEALED,
    WINDOW_WITHHELD,
    CollectorStore,
    LedgerSpend,
    Release,
    Window,
)
from tenant_agent.store_models import LOCK_LEDGER, advisory_lock
from tenant_agent.windows import WindowBook

log = logging.getLogger(__name__)

SEALED = "sealed"
WITHHELD = "withheld"


@dataclass(frozen=True)
class WindowOutcome:
    window_start: int
    window_end: int
    # "sealed" (released now) or "withheld" (over budget; kept for later).
    state: str
    release_key: str | None = None
    rho: float = 0.0
    epsilon: float = 0.0
    # For a withheld window: the ledger's message (remaining budget, renewal).
    reason: str | None = None


@lru_cache(maxsize=1)
def collector_version() -> str:
    try:
        return metadata.version("fedsignal")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def release_key(tenant_id: str, cohort: str, window_start: int, window_end: int) -> str:
    """Idempotency key of a window's release: stable, so a lost store cannot re-release silently."""
    digest = hashlib.sha256(f"{tenant_id}\n{cohort}\n{window_start}\n{window_end}".encode()).hexdigest()[:16]
    return f"{tenant_id}/{window_start}-{window_end}/{digest}"


@lru_cache(maxsize=64)
def _params(mechanism: str, l0: int, linf: int, target: float, delta: float) -> dp.ReleaseParams:
    mech = dp.Mechanism(mechanism)
    if mech is dp.Mechanism.DISCRETE_GAUSSIAN:
        scale = dp.calibrate_scale(mech, l0, linf, rho=target, delta=delta)
    else:
        scale = dp.calibrate_scale(mech, l0, linf, epsilon=target, delta=delta)
    return dp.ReleaseParams(mech, scale, l0, linf, delta)


def release_params(cfg: ReleaseConfig, schema: SignalSchema) -> dp.ReleaseParams:
    """Mechanism and scale for one window, calibrated to the configured per-release loss.

    A schema that fixes the cohort's noise scale (``noise_scale`` > 0, every schema the server publishes)
    decides the noise: a discrete Gaussian of that scale, whatever ``[release]`` says (the server refuses any
    other). The configured mechanism and ``rho``/``epsilon`` calibrate only a schema that fixes none (an
    earlier release's, or the template before the first schema fetch).
    """
    if schema.noise_scale > 0:
        return dp.ReleaseParams(dp.Mechanism.DISCRETE_GAUSSIAN, schema.noise_scale, schema.max_cells_per_unit,
                                schema.max_count_per_cell, cfg.delta)
    target = cfg.rho if cfg.mechanism == dp.Mechanism.DISCRETE_GAUSSIAN.value else cfg.epsilon
    return _params(cfg.mechanism, schema.max_cells_per_unit, schema.max_count_per_cell, target, cfg.delta)


def load_spends(conn: Connection) -> list[Spend]:
    """Every recorded spend, after verifying the ledger chain (``StoreIntegrityError`` if it does not)."""
    CollectorStore.verify_ledger(conn)
    rows = conn.execute(select(LedgerSpend.at, LedgerSpend.rho, LedgerSpend.release_key).order_by(LedgerSpend.id))
    return [Spend(at=utc(at), rho=rho, release_key=key) for at, rho, key in rows]


def load_ledger(conn: Connection, policy: BudgetPolicy) -> BudgetLedger:
    """The verified ledger with the store's persisted clock high-water mark."""
    mark = CollectorStore.clock_high_water(conn)
    return BudgetLedger(policy, load_spends(conn), high_water=None if mark is None else utc(mark))


class WindowSealer:
    """Closes due windows of one tenant under its budget ledger."""

    def __init__(
        self,
        store: CollectorStore,
        book: WindowBook,
        *,
        tenant_id: str,
        cohort: str,
        taxonomy_version: str,
        release_config: ReleaseConfig,
        policy: Callable[[Connection, float], BudgetPolicy],
        grace_seconds: float = 0.0,
        secure: Any = None,
    ) -> None:
        self._store = store
        self._book = book
        self._tenant_id = tenant_id
        self._cohort = cohort
        self._taxonomy_version = taxonomy_version
        self._cfg = release_config
        self._policy = policy
        self._grace = grace_seconds
        # tenant_agent.secagg.SecureRelease: seals windows of secure-mode schemas.
        self.secure = secure

    def close_due(self, now: float, schema: SignalSchema, *, force: bool = False) -> list[WindowOutcome]:
        """Seal (or withhold) every window that ended at least ``grace`` before ``now``.

        ``force`` (``fedsignal agent flush``): also seal every window that has
        begun by ``now``, the current one included; events that arrive for a
        window after it was sealed are counted as late and dropped.
        """
        with self._store.engine.connect() as conn:
            if force:
                due = WindowBook.started_windows(conn, now, [WINDOW_OPEN, WINDOW_WITHHELD])
            else:
                due = WindowBook.due_windows(conn, now, self._grace, [WINDOW_OPEN, WINDOW_WITHHELD])
        outcomes = []
        for start in due:
            outcome = self._seal_one(start, now, schema)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _seal_one(self, window_start: int, now: float, schema: SignalSchema) -> WindowOutcome | None:
        if schema.aggregation_mode == SECURE and self.secure is not None:
            outcome: Any = self.secure.seal_window(window_start, schema, now, self._policy)
            if outcome is not self.secure.LOCAL_FALLBACK:
                return outcome  # type: ignore[no-any-return]
        params = release_params(self._cfg, schema)
        loss = dp.privacy_loss(params)
        with self._store.transaction() as conn:
            # One sealer at a time per store (the ledger must see every spend), and
            # the window's row locked against replicas recording into it.
            advisory_lock(conn, LOCK_LEDGER)
            win = conn.execute(
                select(Window.window_start, Window.window_end, Window.state)
                .where(Window.window_start == window_start)
                .with_for_update()
            ).one_or_none()
            # Another process may have sealed it since we listed it.
            if win is None or win.state == WINDOW_SEALED:
                return None
            key = release_key(self._tenant_id, self._cohort, win.window_start, win.window_end)
            reason = None
            if win.window_end - win.window_start != schema.window_seconds:
                reason = (
                    f"window {win.window_start}-{win.window_end} is {win.window_end - win.window_start} s long but "
                    f"schema version {schema.version} of cohort {self._cohort!r} has {schema.window_seconds} s "
                    "windows: the server would refuse its report, so it is not released (no budget spent)"
                )
            else:
                ledger = load_ledger(conn, self._policy(conn, now))
                try:
                    ledger = ledger.spend(utc(now), loss.rho, key)
                except BudgetExceeded as exc:
                    reason = str(exc)
            # The high-water mark moves forward with every decision, released or not.
            CollectorStore.raise_clock_high_water(conn, now)
            if reason is not None:
                if win.state != WINDOW_WITHHELD:
                    CollectorStore.append_audit(
                        conn,
                        utc(now).isoformat(),
                        self._tenant_id,
                        "release.withheld",
                        {"window_start": win.window_start, "window_end": win.window_end, "rho": loss.rho,
                         "reason": reason},
                    )
                WindowBook.set_state(conn, window_start, WINDOW_WITHHELD, withheld_reason=reason)
                CollectorStore.add_counters(conn, {"releases_withheld": 1})
                log.warning("window %s withheld: %s", window_start, reason)
                return WindowOutcome(win.window_start, win.window_end, WITHHELD, rho=loss.rho, reason=reason)
            spend = ledger.spends[-1]

            table = WindowBook.bounded_table(conn, window_start, schema)
            noisy = dp.release(table, params)
            report = common_pb2.DpReport(
                idempotency_key=key,
                tenant_id=self._tenant_id,
                cohort=self._cohort,
                schema_version=schema.version,
                taxonomy_version=self._taxonomy_version,
                window_start=win.window_start,
                window_end=win.window_end,
                mechanism=dp.mechanism_to_proto(params.mechanism),  # type: ignore[arg-type]
                noise_scale=params.scale,
                sensitivity=params.sensitivity,
                max_cells_per_unit=params.l0,
                max_count_per_cell=params.linf,
                privacy_loss=loss.to_proto(),
                cells=[int(v) for v in noisy],
                collector_version=collector_version(),
            )
            data = report.SerializeToString(deterministic=True)
            CollectorStore.append_spend(conn, now, spend.rho, spend.release_key)
            digest = hashlib.sha256(data).hexdigest()
            conn.execute(
                insert(Release),
                {
                    "release_key": key,
                    "window_start": win.window_start,
                    "window_end": win.window_end,
                    "report": data,
                    "rho": loss.rho,
                    "sealed_at": now,
                    "attempts": 0,
                    "next_attempt_at": 0.0,
                    "report_sha256": digest,
                },
            )
            CollectorStore.append_audit(
                conn,
                utc(now).isoformat(),
                self._tenant_id,
                "budget.spend",
                {
                    "release_key": key,
                    "window_start": win.window_start,
                    "window_end": win.window_end,
                    "mechanism": params.mechanism.value,
                    "noise_scale": params.scale,
                    "rho": loss.rho,
                    "epsilon": loss.epsilon,
                    "delta": loss.delta,
                    "schema_version": schema.version,
                    "report_sha256": digest,
                },
            )
            WindowBook.set_state(conn, window_start, WINDOW_SEALED, release_key=key, withheld_reason=None)
            WindowBook.forget_contributions(conn, window_start)
            CollectorStore.add_counters(conn, {"releases_sealed": 1})
        log.info("sealed window %s-%s as %s (rho %.6g)", win.window_start, win.window_end, key, loss.rho)
        return WindowOutcome(win.window_start, win.window_end, SEALED, key, loss.rho, loss.epsilon)
