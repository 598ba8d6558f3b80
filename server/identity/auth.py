"""Who is calling: the caller's identity, read from its verified client certificate.

Every servicer method starts with ``identity = require(context, ctx, "tenant")``
(or ``"admin"``). The identity comes ONLY from the peer certificate that TLS
verified against the server's CA (``context.auth_context()``), never from a
message field. The certificate's serial must be known to the database and not
revoked; that lookup is cached on the server context (``ctx.revocations``, for
``settings.revocation_cache_seconds`` of the context's clock) so a revocation
reaches every replica within seconds.

Failures abort the call: ``UNAUTHENTICATED`` (no certificate, a certificate
that is not ours, unknown or revoked serial) or ``PERMISSION_DENIED`` (right
person, wrong role — e.g. an admin method called with a tenant certificate).

In ``--insecure-dev`` mode there is no TLS: the identity is taken from the
metadata ``x-fedsignal-subject``, ``x-fedsignal-role`` and
``x-fedsignal-cohort``. That mode exists for local development only and the
server warns loudly when it starts in it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NoReturn, cast

import grpc
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.context import ServerContext
from server.db import read_only
from server.identity import enrollment
from server.identity.ca import ROLES, CertificateAuthorityError, ClientClaims, parse_client_certificate
from server.identity.enrollment import certificate_refusal, tenant_refusal
from server.identity.models import CertificateRecord

INSECURE_SERIAL = "insecure-dev"
SUBJECT_HEADER = "x-fedsignal-subject"
ROLE_HEADER = "x-fedsignal-role"
COHORT_HEADER = "x-fedsignal-cohort"

RequiredRole = Literal["tenant", "admin", "any"]


@dataclass(frozen=True)
class Identity:
    """The authenticated caller. ``subject`` is the tenant id (or the admin's name)."""

    subject: str
    role: Literal["tenant", "admin"]
    cohort: str | None
    serial: str

    @property
    def tenant_id(self) -> str:
        return self.subject

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.role}:{self.subject}"


@lru_cache(maxsize=4096)
def _claims(pem: bytes) -> ClientClaims:
    return parse_client_certificate(pem)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("grpc abort returned")  # pragma: no cover - abort always raises


def _refusal(ctx: ServerContext, identity: Identity) -> str | None:
    """Why this identity may not act now, or None. Cached for a few seconds."""
    if identity.serial == INSECURE_SERIAL:
        key = f"{INSECURE_SERIAL}:{identity.subject}"
        hit, refusal = ctx.revocations.get(key)
        if hit:
            return refusal
        with read_only(ctx.read_sessions) as session:
            refusal = tenant_refusal(session, identity.subject) if identity.role == "tenant" else None
        ctx.revocations.put(key, refusal)
        return refusal
    recent = _recent_of(ctx)
    recent.seen(identity.serial)
    hit, refusal = ctx.revocations.get(identity.serial)
    if hit:
        return refusal
    with recent.refreshing:  # one refresh at a time: callers that queued here find it done
        hit, refusal = ctx.revocations.get(identity.serial)
        if hit:
            return refusal
        now = ctx.clock()
        batch = recent.batch(identity.serial, now, timedelta(seconds=ctx.settings.revocation_cache_seconds),
                             lambda serial: ctx.revocations.get(serial)[0])
        verdicts = _verdicts(ctx, batch, now)
        recent.looked_up(batch, now)
    return verdicts[identity.serial]


#: Most serials one refresh looks up (the caller's first, then the others seen most recently).
REFRESH_BATCH = 500


class _RecentSerials:
    """The certificate serials a server context authenticated lately, most recent last, with when
    this context last looked each one up.

    When one serial's cached verdict expires, those of the others seen lately are about to expire
    too: one statement looks up the caller's and every other whose verdict is past half its life
    (each verdict is then what the database said at most ``revocation_cache_seconds`` ago, as
    before), instead of one statement per caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serials: OrderedDict[str, datetime | None] = OrderedDict()
        self.refreshing = threading.Lock()

    def seen(self, serial: str) -> None:
        with self._lock:
            self._serials[serial] = self._serials.get(serial)
            self._serials.move_to_end(serial)
            if len(self._serials) > REFRESH_BATCH:
                self._serials.popitem(last=False)

    def batch(self, first: str, now: datetime, ttl: timedelta, cached: Callable[[str], bool]) -> list[str]:
        """``first`` and the recent serials whose last look-up is older than ``ttl / 2`` or whose
        verdict is not ``cached`` (none when verdicts are not cached at all)."""
        if ttl <= timedelta(0):
            return [first]
        due = now - ttl / 2
        with self._lock:
            recent = list(reversed(self._serials.items()))
        others = [s for s, at in recent if s != first and (at is None or at <= due or not cached(s))]
        return [first, *others[: REFRESH_BATCH - 1]]

    def looked_up(self, serials: list[str], at: datetime) -> None:
        with self._lock:
            for serial in serials:
                if serial in self._serials:
                    self._serials[serial] = at


_RECENT: weakref.WeakKeyDictionary[object, _RecentSerials] = weakref.WeakKeyDictionary()
_RECENT_GUARD = threading.Lock()


def _recent_of(ctx: ServerContext) -> _RecentSerials:
    with _RECENT_GUARD:  # keyed by the context's revocation cache (one per context; a context is unhashable)
        found = _RECENT.get(ctx.revocations)
        if found is None:
            found = _RECENT[ctx.revocations] = _RecentSerials()
        return found


_REFUSAL = enrollment._REFUSAL  # the one statement certificate_refusal runs (not ours to change)
#: :func:`certificate_refusal`'s statement for many serials at once: its columns and joins, the serial
#: first; used only while that statement selects by serial alone (otherwise every serial is looked up alone).
_REFUSALS = (select(CertificateRecord.serial, *_REFUSAL.selected_columns)
             .select_from(*_REFUSAL.get_final_froms())
             .where(CertificateRecord.serial.in_(bindparam("serials", expanding=True))))
_BATCHABLE = str(_REFUSAL.whereclause) == str(CertificateRecord.serial == bindparam("serial"))


class _Answered:
    """A session for :func:`certificate_refusal` whose one statement is answered from a batch read;
    any other statement goes to the real session (the verdict's rules stay in one place)."""

    def __init__(self, session: Session, rows: dict[str, Any]) -> None:
        self._session, self._rows = session, rows

    def execute(self, statement: Any, params: Any = None) -> Any:
        if statement is _REFUSAL and _BATCHABLE:
            return _FirstOf(self._rows.get(params["serial"]))
        return self._session.execute(statement, params)


class _FirstOf:
    def __init__(self, row: Any) -> None:
        self._row = row

    def first(self) -> Any:
        return self._row


def _verdicts(ctx: ServerContext, serials: list[str], now: datetime) -> dict[str, str | None]:
    """Look up and cache the verdicts of ``serials`` (one statement), each as of ``now``."""
    with read_only(ctx.read_sessions) as session:
        if len(serials) == 1 or not _BATCHABLE:
            verdicts = {serial: certificate_refusal(session, serial, now) for serial in serials}
        else:
            rows = {row[0]: tuple(row[1:]) for row in session.execute(_REFUSALS, {"serials": serials})}
            answered = cast(Session, _Answered(session, rows))
            verdicts = {serial: certificate_refusal(answered, serial, now) for serial in serials}
    for serial, refusal in verdicts.items():
        ctx.revocations.put(serial, refusal)
    return verdicts


def _insecure_identity(context: grpc.ServicerContext) -> Identity:
    meta = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    subject, role, cohort = meta.get(SUBJECT_HEADER), meta.get(ROLE_HEADER), meta.get(COHORT_HEADER)
    if not subject or role not in ROLES:
        _abort(
            context, grpc.StatusCode.UNAUTHENTICATED,
            f"insecure-dev server: send metadata {SUBJECT_HEADER} and {ROLE_HEADER} (tenant|admin)",
        )
    if role == "tenant" and not cohort:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"insecure-dev server: tenants must send {COHORT_HEADER}")
    return Identity(subject=subject, role=role, cohort=cohort or None, serial=INSECURE_SERIAL)  # type: ignore[arg-type]


def peer_identity(context: grpc.ServicerContext, ctx: ServerContext) -> Identity:
    """The caller's identity, or abort ``UNAUTHENTICATED``. Does not check the role."""
    if ctx.settings.insecure_dev:
        identity = _insecure_identity(context)
    else:
        found: bytes | list[bytes] = context.auth_context().get("x509_pem_cert") or []
        pems: list[bytes] = [found] if isinstance(found, bytes) else list(found)
        if not pems:
            _abort(
                context, grpc.StatusCode.UNAUTHENTICATED,
                "this call needs a client certificate: connect over mutual TLS with the credentials "
                "issued at enrollment (or an admin certificate)",
            )
        try:
            claims = _claims(bytes(pems[0]))
        except CertificateAuthorityError as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"client certificate not accepted: {exc}")
        identity = Identity(subject=claims.subject, role=claims.role, cohort=claims.cohort, serial=claims.serial)
    refusal = _refusal(ctx, identity)
    if refusal is not None:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, refusal)
    return identity


def _a(word: str) -> str:
    """``word`` with its indefinite article ("an admin", "a tenant")."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def require(context: grpc.ServicerContext, ctx: ServerContext, role: str) -> Identity:
    """Authenticate the caller and check it holds ``role`` ("tenant", "admin" or "any").

    Aborts the call with ``UNAUTHENTICATED`` or ``PERMISSION_DENIED``; returns
    the identity otherwise.
    """
    identity = peer_identity(context, ctx)
    if role != "any" and identity.role != role:
        _abort(
            context, grpc.StatusCode.PERMISSION_DENIED,
            f"this method needs {_a(role)} certificate; the caller holds {_a(identity.role)} certificate",
        )
    return identity
