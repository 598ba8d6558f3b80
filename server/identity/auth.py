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

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal, NoReturn

import grpc

from server.context import ServerContext
from server.db import read_only
from server.identity.ca import ROLES, CertificateAuthorityError, ClientClaims, parse_client_certificate
from server.identity.enrollment import certificate_refusals, tenant_refusal

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
    recent = ctx.revocations.recent
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


def _verdicts(ctx: ServerContext, serials: list[str], now: datetime) -> dict[str, str | None]:
    """Look up and cache the verdicts of ``serials`` (one statement), each as of ``now``."""
    with read_only(ctx.read_sessions) as session:
        verdicts = certificate_refusals(session, serials, now)
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
