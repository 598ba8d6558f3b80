"""The durable outbox: sealed reports wait here until the server acknowledges them.

Each report is sent as the exact bytes sealed in the store, with its
idempotency key, so a resend after a crash or a lost reply is byte-identical
and the server answers DUPLICATE, which counts as delivered. Failures back
off exponentially with jitter (clock and random source injected). A report
the server rejects as invalid stops being retried and is kept with the
server's reason for the operator.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from fedsignal.v1 import signals_pb2
from sqlalchemy import func, select, update

from tenant_agent.config import DeliveryConfig
from tenant_agent.store import CollectorStore, Release

log = logging.getLogger(__name__)

SUBMIT_METHOD = "/fedsignal.v1.SignalService/SubmitReport"

# The server will never accept these reports as they are: stop retrying.
PERMANENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION}
)
REJECTED = "rejected"


@dataclass(frozen=True)
class DeliveryResult:
    accepted: int = 0
    duplicates: int = 0
    failed: int = 0
    rejected: int = 0
    # Reports still waiting (after this attempt), and when the next is due.
    pending: int = 0
    next_attempt_at: float | None = None

    @property
    def delivered(self) -> int:
        return self.accepted + self.duplicates


def backoff_delay(attempts: int, cfg: DeliveryConfig, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base·2^(attempts-1))."""
    delay = min(cfg.backoff_cap_seconds, cfg.backoff_base_seconds * (2 ** max(0, min(attempts - 1, 40))))
    return delay * (0.5 + 0.5 * rng.random())


class Outbox:
    def __init__(
        self,
        store: CollectorStore,
        cfg: DeliveryConfig,
        *,
        rng: random.Random | None = None,
        audit_actor: str = "collector",
    ) -> None:
        self._store = store
        self._cfg = cfg
        self._rng = rng or random.Random()
        self._actor = audit_actor

    def depth(self) -> int:
        with self._store.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(Release).where(Release.delivered_at.is_(None),
                                                                    Release.outcome.is_(None))
                ).scalar_one()
            )

    def deliver(self, channel: grpc.Channel, now: float, *, force: bool = False) -> DeliveryResult:
        """Send every report whose next attempt is due (``force``: all pending ones).

        One process sends at a time (``CollectorStore.sender``): a replica that
        finds another sending skips this pass, so each report goes out once.
        """
        with self._store.sender() as sending:
            if not sending:
                pending, next_at = self._pending()
                return DeliveryResult(pending=pending, next_attempt_at=next_at)
            return self._deliver(channel, now, force=force)

    def _deliver(self, channel: grpc.Channel, now: float, *, force: bool = False) -> DeliveryResult:
        submit: Callable[..., signals_pb2.SubmitReportResponse] = channel.unary_unary(
            SUBMIT_METHOD,
            request_serializer=None,  # the sealed bytes go out exactly as stored
            response_deserializer=signals_pb2.SubmitReportResponse.FromString,
        )
        with self._store.engine.connect() as conn:
            query = select(Release.release_key, Release.report, Release.attempts).where(
                Release.delivered_at.is_(None), Release.outcome.is_(None)
            )
            if not force:
                query = query.where(Release.next_attempt_at <= now)
            due = conn.execute(query.order_by(Release.window_start)).all()
        accepted = duplicates = failed = rejected = 0
        unavailable = False
        for key, _data, attempts in due:
            if unavailable:
                # The server is down: do not hammer it report by report.
                self._reschedule(key, attempts + 1, now, "not attempted: server unavailable")
                failed += 1
                continue
            try:
                response = submit(self._store.verified_report_bytes(key), timeout=self._cfg.rpc_timeout_seconds)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = exc.details() if hasattr(exc, "details") else str(exc)
                message = f"{code.name}: {details}"
                if code in PERMANENT_CODES:
                    self._mark(key, now, REJECTED, message)
                    log.error("server rejected report %s: %s", key, message)
                    rejected += 1
                else:
                    self._reschedule(key, attempts + 1, now, message)
                    unavailable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    failed += 1
                continue
            if response.outcome == signals_pb2.SubmitReportResponse.DUPLICATE:
                duplicates += 1
                self._mark(key, now, "duplicate", None)
            else:
                accepted += 1
                self._mark(key, now, "accepted", None)
        pending, next_at = self._pending()
        return DeliveryResult(accepted, duplicates, failed, rejected, pending, next_at)

    def _pending(self) -> tuple[int, float | None]:
        with self._store.engine.connect() as conn:
            count, next_at = conn.execute(
                select(func.count(), func.min(Release.next_attempt_at)).where(
                    Release.delivered_at.is_(None), Release.outcome.is_(None)
                )
            ).one()
        return int(count), (float(next_at) if next_at is not None else None)

    def _reschedule(self, key: str, attempts: int, now: float, error: str) -> None:
        next_at = now + backoff_delay(attempts, self._cfg, self._rng)
        with self._store.transaction() as conn:
            conn.execute(
                update(Release)
                .where(Release.release_key == key, Release.delivered_at.is_(None))
                .values(attempts=attempts, next_attempt_at=next_at, last_error=error)
            )
            CollectorStore.add_counters(conn, {"delivery_failures": 1})

    def _mark(self, key: str, now: float, outcome: str, error: str | None) -> None:
        with self._store.transaction() as conn:
            result = conn.execute(
                update(Release)
                .where(Release.release_key == key, Release.delivered_at.is_(None), Release.outcome.is_(None))
                .values(
                    delivered_at=None if outcome == REJECTED else now,
                    outcome=outcome,
                    last_error=error,
                    attempts=Release.attempts + 1,
                )
            )
            # Another process may have marked it first; count and audit once.
            if result.rowcount:
                CollectorStore.add_counters(conn, {f"releases_{outcome}": 1})
                CollectorStore.append_audit(
                    conn,
                    _iso(now),
                    self._actor,
                    "release.rejected" if outcome == REJECTED else "release.delivered",
                    {"release_key": key, "outcome": outcome, "error": error},
                )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()
