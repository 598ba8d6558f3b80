"""The one servicer pattern: authenticate the caller, open the unit of work, map domain errors.

Every gRPC method of every service reads the same way::

    def RevokeTenant(self, request, context):
        with unit_of_work(context, self._ctx, "admin") as call:
            count = identity.revoke_tenant(call.session, request.tenant_id, ..., call.actor, self._ctx.clock())
        return admin_pb2.RevokeTenantResponse(certificates_revoked=count)

:func:`unit_of_work` authenticates the caller (:func:`server.identity.auth.require`), opens
one transaction (committed when the block ends, rolled back when it raises) and turns a
domain error raised inside into the status of its kind through :data:`STATUS`, the only
error-to-status table of the server. Domain errors carry no wire status: each subclasses
one kind of :mod:`aggregation.errors` (``NotFound``, ``PreconditionFailed``, ...).

Each service module exposes ``add_to_server(grpc_server, ctx)``; :mod:`server.app`
lists them as code.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import NoReturn

import grpc
from sqlalchemy.orm import Session

from aggregation.clock import Clock
from aggregation.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FedsignalError,
    InvalidRequest,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionFailed,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from server.context import ServerContext
from server.db import transaction
from server.identity.auth import Identity, RequiredRole, require
from server.observability import log_event

log = logging.getLogger("fedsignal.server.rpc")

#: Kind of domain error → the status a servicer answers with. The only such table.
STATUS: tuple[tuple[type[FedsignalError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Aborted, grpc.StatusCode.ABORTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)
_BY_KIND = dict(STATUS)

#: The answer to a user-facing error of no kind: the request cannot be served in the current state.
DEFAULT_STATUS = grpc.StatusCode.FAILED_PRECONDITION


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status ``exc`` is answered with: its nearest kind in :data:`STATUS` (method resolution order).

    ``INTERNAL`` for anything that is not a :class:`FedsignalError` (a bug, not a refusal).
    """
    if not isinstance(exc, FedsignalError):
        return grpc.StatusCode.INTERNAL
    for cls in type(exc).__mro__:
        code = _BY_KIND.get(cls)
        if code is not None:
            return code
    return DEFAULT_STATUS


def abort(context: grpc.ServicerContext, exc: FedsignalError) -> NoReturn:
    """End the call with ``exc``'s status and message (never returns)."""
    code = status_for(exc)
    log_event(log, "call refused", logging.INFO, code=code.name, error=type(exc).__name__)
    context.abort(code, str(exc))
    raise AssertionError("grpc abort returned")  # pragma: no cover - abort always raises


class Call:
    """One authenticated call in progress: who is calling and its unit of work."""

    def __init__(self, caller: Identity | None, session: Session | None) -> None:
        self._caller = caller
        self._session = session

    @property
    def caller(self) -> Identity:
        if self._caller is None:
            raise RuntimeError("this call was opened without a role; it has no authenticated caller")
        return self._caller

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return self.caller.actor

    @property
    def cohort(self) -> str:
        """The calling tenant's cohort (from its certificate)."""
        return self.caller.cohort or ""

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("this call was opened without a unit of work")
        return self._session


@contextmanager
def unit_of_work(
    context: grpc.ServicerContext, ctx: ServerContext, role: RequiredRole | None, *, store: bool = True
) -> Iterator[Call]:
    """Authenticate the caller as ``role``, open one transaction, map domain errors to statuses.

    ``role`` None: the method needs no certificate (enrollment). A tenant caller must
    carry a cohort in its certificate (``PERMISSION_DENIED`` otherwise). ``store`` False:
    no transaction is opened (the domain layer stores by itself, e.g. report ingest).
    """
    caller = require(context, ctx, role) if role is not None else None
    if caller is not None and caller.role == "tenant" and not caller.cohort:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the certificate of tenant {caller.subject!r} names no cohort; re-enroll the collector",
        )
    try:
        if not store:
            yield Call(caller, None)
            return
        with transaction(ctx.sessions) as session:
            yield Call(caller, session)
    except FedsignalError as exc:
        abort(context, exc)


class InvalidText(InvalidRequest):
    """A string field of an incoming message that is too long or carries control characters."""


def check_text(value: str, name: str, *, max_chars: int) -> str:
    """``value`` when it is at most ``max_chars`` printable characters; :class:`InvalidText` otherwise.

    Every string a caller sends is checked before it reaches the store: a NUL byte or a
    control character is refused here, never left for the database driver to trip on.
    """
    if len(value) > max_chars:
        raise InvalidText(f"{name} is {len(value)} characters long; at most {max_chars} are accepted")
    if "\x00" in value:
        raise InvalidText(f"{name} contains a NUL character")
    if not value.isprintable():
        raise InvalidText(f"{name} contains control or non-printable characters")
    return value


class RateLimiter:
    """At most ``limit`` events per ``per`` (of the injected clock) for each key, on this replica."""

    def __init__(self, clock: Clock, limit: int, per: timedelta) -> None:
        if limit < 1:
            raise ValueError("a rate limit allows at least one event")
        self._clock, self._limit, self._per = clock, limit, per
        self._events: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one event for ``key``; False (and not counted) when the key is over its limit."""
        now = self._clock()
        with self._lock:
            if len(self._events) > 100_000:
                self._events.clear()
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self._per:
                events.popleft()
            if len(events) >= self._limit:
                return False
            events.append(now)
            return True
