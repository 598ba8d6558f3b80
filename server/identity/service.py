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

import grpc
from fedsignal.v1 import enrollment_pb2, enrollment_pb2_grpc

from aggregation.errors import FedsignalError
from server.context import ServerContext
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import CertificateAuthority, CertificateAuthorityError, InvalidCsr
from server.logs import log_event
from server.servicer import status_for

log = logging.getLogger("fedsignal.server.enrollment")

MAX_TOKEN_CHARS = 256
MAX_CSR_BYTES = 16 * 1024

_STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidCsr, grpc.StatusCode.INVALID_ARGUMENT),
    (identity.UnknownToken, grpc.StatusCode.UNAUTHENTICATED),
    (identity.ExpiredToken, grpc.StatusCode.FAILED_PRECONDITION),
    (identity.TokenAlreadyUsed, grpc.StatusCode.ALREADY_EXISTS),
    (identity.TenantRevoked, grpc.StatusCode.PERMISSION_DENIED),
    (CertificateAuthorityError, grpc.StatusCode.FAILED_PRECONDITION),
    (FedsignalError, grpc.StatusCode.FAILED_PRECONDITION),
]



class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._ca: CertificateAuthority | None = None
        self._ca_lock = threading.Lock()

    def _authority(self) -> CertificateAuthority:
        with self._ca_lock:
            if self._ca is None:
                self._ca = CertificateAuthority.load(self._ctx.settings.state_dir)
            return self._ca

    def Enroll(self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext) -> enrollment_pb2.EnrollResponse:
        from server.review.trust_root import current_root_bytes
        from server.signals.schemas import current_schema

        if not request.token or len(request.token) > MAX_TOKEN_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an enrollment token is required")
        if not request.csr_pem or len(request.csr_pem) > MAX_CSR_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a PEM certificate signing request (csr_pem) is required")
        now = self._ctx.clock()
        try:
            ca = self._authority()
            with transaction(self._ctx.sessions) as session:
                grant = identity.redeem_token(session, request.token, now)
                issued = ca.issue_client_cert(request.csr_pem, grant.tenant_id, grant.cohort, "tenant", now=now)
                identity.complete_enrollment(session, grant, request.token, issued.serial, issued.not_after, now)
                trust_root = current_root_bytes(session)
                schema = current_schema(session, grant.cohort).to_proto()
        except FedsignalError as exc:
            code = status_for(exc, _STATUS)
            log_event(log, "enrollment refused", logging.WARNING, code=code.name, reason=type(exc).__name__)
            context.abort(code, str(exc))
        log_event(log, "tenant enrolled", tenant=grant.tenant_id, cohort=grant.cohort, serial=issued.serial)
        return enrollment_pb2.EnrollResponse(
            tenant_id=grant.tenant_id,
            cohort=grant.cohort,
            client_certificate_pem=issued.certificate_pem,
            ca_certificate_pem=ca.certificate_pem,
            trust_root=trust_root,
            signal_schema=schema,
        )


def add_to_server(grpc_server: grpc.Server, ctx: ServerContext) -> None:
    enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(ctx), grpc_server)
