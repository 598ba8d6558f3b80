"""The durable outbox: sealed reports wait here until the server acknowledges them.

Each report is sent as the exact bytes sealed in the store, with its
idempotency key, so a resend after a crash or a lost reply is byte-identical
and the server answers DUPLICATE, which counts as delivered. Failures back
off exponentially with jitter (clock and random source injected). A report
the server rejects as invalid stops being retried and is kept with the
server's reason for the operator.

A report the server refuses *for good* (the codes of :data:`PERMANENT_CODES`:
it will never accept those bytes) moves to the dead-letter state: it is no
longer retried, the server's code and reason are logged at ERROR and kept on
the row, and ``fedsignal agent status`` lists it. The state is a value of
the release row's ``outcome`` column (``"dead_letter"``; stores written
before it say ``"rejected"``, read the same way).

A report is never sent before its window has ended by the collector's clock
(a window sealed early by ``agent flush`` waits for its end): the server
refuses a window that has not ended yet.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import grpc
from fedsignal.v1 import signals_pb2
from sqlalchemy import func, select, update

from aggregation.clock import from_unix, to_unix
from tenant_agent.config import DeliveryConfig
from tenant_agent.store import CollectorStore, Release

log = logging.getLogger(__name__)

SUBMIT_METHOD = "/fedsignal.v1.SignalService/SubmitReport"

# The server will never accept these reports as they are: stop retrying.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
class Outcome(StrEnum):
    """The ``outcome`` column of a release row once the outbox is done with it (NULL while pending)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the server had it already: delivered
    DEAD_LETTER = "dead_letter"  # refused for good; kept with the server's reason
    REJECTED = "rejected"  # what stores written before the dead-letter state say for one


DEAD_LETTER = Outcome.DEAD_LETTER
DEAD_LETTER_OUTCOMES = (Outcome.DEAD_LETTER.value, Outcome.REJECTED.value)


@dataclass(frozen=True)
class DeadLetter:
    """A sealed report the server refused for good, with the server's code and reason."""

    release_key: str
    window_start: datetime
    window_end: datetime
    reason: str


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

    def dead_letters(self) -> tuple[DeadLetter, ...]:
        """Reports refused for good, newest window first."""
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(Release.release_key, Release.window_start, Release.window_end, Release.last_error)
                .where(Release.outcome.in_(DEAD_LETTER_OUTCOMES))
                .order_by(Release.window_start.desc())
            ).all()
        return tuple(
            DeadLetter(key, from_unix(start), from_unix(end), error or "no reason recorded")
            for key, start, end, error in rows
        )

    def deliver(self, channel: grpc.Channel, at: datetime, *, force: bool = False) -> DeliveryResult:
        """Send every report whose next attempt is due at ``at`` (``force``: all pending ones)."""
        now = to_unix(at)  # the outbox rows keep unix seconds
        submit: Callable[..., signals_pb2.SubmitReportResponse] = channel.unary_unary(
            SUBMIT_METHOD,
            request_serializer=None,  # the sealed bytes go out exactly as stored
            response_deserializer=signals_pb2.SubmitReportResponse.FromString,
        )
        with self._store.engine.connect() as conn:
            query = select(Release.release_key, Release.report, Release.attempts).where(
                Release.delivered_at.is_(None),
                Release.outcome.is_(None),
                # The server accepts a window only once it has ended (it answers OUT_OF_RANGE, for good, before):
                # a window sealed early (`agent flush`) waits here for its end.
                Release.window_end <= now,
            )
            if not force:
                query = query.where(Release.next_attempt_at <= now)
            due = conn.execute(query.order_by(Release.window_start)).all()
        accepted = duplicates = failed = rejected = 0
        unavailable = False
        for key, data, attempts in due:
            if unavailable:
                # The server is down: do not hammer it report by report.
                self._reschedule(key, attempts + 1, now, "not attempted: server unavailable")
                failed += 1
                continue
            try:
                response = submit(data, timeout=self._cfg.rpc_timeout_seconds)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = exc.details() if hasattr(exc, "details") else str(exc)
                message = f"{code.name}: {details}"
                if code in PERMANENT_CODES:
                    self._mark(key, now, DEAD_LETTER, message)
                    log.error("server refused report %s for good, moved to the dead letters: %s", key, message)
                    rejected += 1
                else:
                    self._reschedule(key, attempts + 1, now, message)
                    unavailable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    failed += 1
                continue
            if response.outcome == signals_pb2.SubmitReportResponse.DUPLICATE:
                duplicates += 1
                self._mark(key, now, Outcome.DUPLICATE, None)
            else:
                accepted += 1
                self._mark(key, now, Outcome.ACCEPTED, None)
        pending, next_at = self._pending()
        return DeliveryResult(accepted, duplicates, failed, rejected, pending, next_at)

    def _pending(self) -> tuple[int, float | None]:
        """How many reports wait, and when the first may go (its backoff over and its window ended)."""
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(Release.next_attempt_at, Release.window_end).where(
                    Release.delivered_at.is_(None), Release.outcome.is_(None)
                )
            ).all()
        due = [max(float(next_at), float(end)) for next_at, end in rows]
        return len(due), (min(due) if due else None)

    def _reschedule(self, key: str, attempts: int, now: float, error: str) -> None:
        next_at = now + backoff_delay(attempts, self._cfg, self._rng)
        with self._store.transaction() as conn:
            conn.execute(
                update(Release)
                .where(Release.release_key == key, Release.delivered_at.is_(None))
                .values(attempts=attempts, next_attempt_at=next_at, last_error=error)
            )
            CollectorStore.add_counters(conn, {"delivery_failures": 1})

    def _mark(self, key: str, now: float, outcome: Outcome, error: str | None) -> None:
        with self._store.transaction() as conn:
            result = conn.execute(
                update(Release)
                .where(Release.release_key == key, Release.delivered_at.is_(None), Release.outcome.is_(None))
                .values(
                    delivered_at=None if outcome == DEAD_LETTER else now,
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
                    from_unix(now).isoformat(),
                    self._actor,
                    "release.dead_letter" if outcome == DEAD_LETTER else "release.delivered",
                    {"release_key": key, "outcome": outcome, "error": error},
                )

