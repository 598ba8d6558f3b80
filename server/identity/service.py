"""EnrollmentService: a one-time token and a CSR in, a client certificate out.

The only service callable without a client certificate (it is served on the
enrollment port, see :mod:`server.app`). Status codes: malformed request or
CSR → ``INVALID_ARGUMENT``; unknown token → ``UNAUTHENTICATED``; expired token
→ ``FAILED_PRECONDITION``; token already used → ``ALREADY_EXISTS``; revoked
tenant → ``PERMISSION_DENIED``; server not initialised (no CA, no trust root)
→ ``FAILED_PRECONDITION``. A failed enrollment leaves the token unused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from fedsignal.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from sqlalchemy.orm import Session

from server.context import ServerContext
from server.identity import enrollment as identity
from server.identity.ca import CertificateAuthority
from server.observability import log_event
from server.servicer import unit_of_work

log = logging.getLogger("fedsignal.server.enrollment")

MAX_TOKEN_CHARS = 256
MAX_CSR_BYTES = 16 * 1024


@dataclass(frozen=True)
class EnrollmentPackage:
    """What an enrolled tenant receives besides its certificate, read in the enrollment's transaction.

    Handed in by :mod:`server.app` (the trust root lives in ``server.review``, the schema in
    ``server.signals``, both above this package).
    """

    trust_root: Callable[[Session], bytes]
    signal_schema: Callable[[Session, str], common_pb2.SignalSchema]


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, ctx: ServerContext, package: EnrollmentPackage) -> None:
        self._ctx = ctx
        self._package = package
        self._ca: CertificateAuthority | None = None
        self._ca_lock = threading.Lock()

    def _authority(self) -> CertificateAuthority:
        with self._ca_lock:
            if self._ca is None:
                self._ca = CertificateAuthority.load(self._ctx.settings.state_dir, clock=self._ctx.clock)
            return self._ca

    def Enroll(self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext) -> enrollment_pb2.EnrollResponse:
        if not request.token or len(request.token) > MAX_TOKEN_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an enrollment token is required")
        if not request.csr_pem or len(request.csr_pem) > MAX_CSR_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a PEM certificate signing request (csr_pem) is required")
        now = self._ctx.clock()
        with unit_of_work(context, self._ctx, None) as call:
            ca = self._authority()
            grant = identity.redeem_token(call.session, request.token, now)
            # The cohort's schema before the audited enrollment: a new cohort's first version is created
            # under its schema lock, which comes before the audit lock (server.db.locks' order).
            schema = self._package.signal_schema(call.session, grant.cohort)
            issued = ca.issue_client_cert(request.csr_pem, grant.tenant_id, grant.cohort, "tenant", now=now)
            identity.complete_enrollment(call.session, grant, request.token, issued.serial, issued.not_after, now)
            trust_root = self._package.trust_root(call.session)
        log_event(log, "tenant enrolled", tenant=grant.tenant_id, cohort=grant.cohort, serial=issued.serial)
        return enrollment_pb2.EnrollResponse(
            tenant_id=grant.tenant_id,
            cohort=grant.cohort,
            client_certificate_pem=issued.certificate_pem,
            ca_certificate_pem=ca.certificate_pem,
            trust_root=trust_root,
            signal_schema=schema,
        )


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext, package: EnrollmentPackage) -> None:
    enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(ctx, package), grpc_server)
