"""gRPC transport: mutual-TLS channel from ``state_dir/credentials`` and enrollment.

Enrollment generates the tenant's private key locally (ECDSA P-256), sends
only a CSR with the one-time token over server-authenticated TLS (the CA
pinned from a file the operator gives, or plaintext with ``insecure`` for
development), and writes what the server returns:

- ``credentials/client.key``, ``client.crt``, ``ca.crt``
- ``credentials/identity.json``: tenant_id, cohort, server address
- ``trust/root.json``: the pinned trust root of reviewer keys
- ``schema.json``: the cohort's signal schema at enrollment

Every directory is created 0700 and every file 0600 (atomic replace through
:mod:`tenant_agent.files`).

The trust root is verified before anything is written: a first root must be
well formed and signed by its own root threshold; on re-enrollment
(``force``, e.g. renewing the certificate) an already pinned root is only
replaced by a byte-identical root or by its verified successor (version N+1
signed by N's threshold and its own). A newer root that is not directly N+1
leaves the pinned root in place (the bundle client follows the rotation chain
on its next pull); anything else is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fedsignal.v1 import enrollment_pb2, enrollment_pb2_grpc

from aggregation.errors import FedsignalError
from aggregation.schema import SignalSchema
from aggregation.trust_root import load_trusted_root, verify_rotation
from tenant_agent.files import private_dir, write_atomic

CREDENTIALS = "credentials"
TRUST_ROOT = "trust/root.json"
SCHEMA_FILE = "schema.json"


class TransportError(FedsignalError):
    """Credentials are missing or unusable; the message says what to run."""


@dataclass(frozen=True)
class Enrollment:
    tenant_id: str
    cohort: str
    server: str
    schema: SignalSchema
    state_dir: Path


#: Codes meaning the request never reached a server that could answer it.
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def rpc_failure(exc: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call, on one line (never the raw ``_InactiveRpcError`` dump)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return f"{name}: {' '.join(str(details or 'no details').split())}"


def read_identity(state_dir: Path) -> dict[str, Any]:
    path = state_dir / CREDENTIALS / "identity.json"
    if not path.exists():
        raise TransportError(f"{path} not found: enroll first with `fedsignal agent enroll`")
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TransportError(f"{path} cannot be read ({exc}); re-enroll with `fedsignal agent enroll --force`") from exc
    return doc


class _IdentityMetadata(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """In --insecure-dev the server reads the caller's identity from metadata."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = list(details.metadata or []) + list(self._metadata)
        details = details._replace(metadata=metadata)
        return continuation(details, request)


def insecure_dev_channel(address: str, tenant_id: str, cohort: str) -> grpc.Channel:
    """Plaintext channel that declares the tenant in metadata (development servers only)."""
    metadata = (
        ("x-fedsignal-subject", tenant_id),
        ("x-fedsignal-role", "tenant"),
        ("x-fedsignal-cohort", cohort),
    )
    return grpc.intercept_channel(grpc.insecure_channel(address), _IdentityMetadata(metadata))


def open_channel(state_dir: Path, address: str, *, insecure: bool = False) -> grpc.Channel:
    """A channel to the server authenticated by this tenant's client certificate."""
    if insecure:
        ident = read_identity(state_dir)
        return insecure_dev_channel(address, str(ident["tenant_id"]), str(ident["cohort"]))
    creds = state_dir / CREDENTIALS
    try:
        key = (creds / "client.key").read_bytes()
        cert = (creds / "client.crt").read_bytes()
        ca = (creds / "ca.crt").read_bytes()
    except FileNotFoundError as exc:
        raise TransportError(
            f"missing credential {exc.filename}: enroll first with `fedsignal agent enroll`"
        ) from exc
    channel_creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(address, channel_creds)


def accept_trust_root(state_dir: Path, offered: bytes) -> bytes | None:
    """The root bytes to pin from an Enroll response, ``None`` to keep the pinned root as it is.

    Raises :class:`TransportError` when the offered root cannot be trusted.
    """
    path = state_dir / TRUST_ROOT
    try:
        candidate = load_trusted_root(offered)
    except FedsignalError as exc:
        raise TransportError(
            f"the server sent a trust root that does not verify ({exc}); not enrolling"
        ) from exc
    if not path.exists():
        return offered  # first enrollment: trust on first use of a well-formed, self-signed root
    pinned_bytes = path.read_bytes()
    if pinned_bytes == offered:
        return None
    try:
        pinned = load_trusted_root(pinned_bytes)
    except FedsignalError as exc:
        raise TransportError(
            f"the pinned trust root {path} does not load ({exc}); refusing to replace it with the server's: "
            "restore it, or remove it deliberately to re-anchor trust"
        ) from exc
    if candidate.version <= pinned.version:
        raise TransportError(
            f"the server sent trust root v{candidate.version}, which is not the pinned v{pinned.version} nor newer; "
            "not enrolling (a different root for a version already pinned, or a rollback)"
        )
    if candidate.version > pinned.version + 1:
        # Only the newest root is in the response; the bundle client follows the chain N+1, N+2, ...
        return None
    try:
        verify_rotation(pinned, offered)
    except FedsignalError as exc:
        raise TransportError(
            f"the server sent trust root v{candidate.version}, which is not a valid rotation of the pinned "
            f"v{pinned.version} ({exc}); not enrolling"
        ) from exc
    return offered


def make_csr() -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 private key (PEM, unencrypted) and its CSR (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsignal-collector")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def enroll(
    address: str,
    token: str,
    state_dir: Path,
    ca_pem: bytes | None,
    *,
    insecure: bool = False,
    signals_address: str | None = None,
    timeout: float = 30.0,
    force: bool = False,
) -> Enrollment:
    """Exchange a one-time token for credentials and write them under ``state_dir``.

    ``address`` is the server's enrollment endpoint (server-authenticated TLS
    only); ``signals_address`` the mutual-TLS endpoint the collector uses from
    then on (default: the same address, as in --insecure-dev). An enrolled
    state directory is only re-enrolled with ``force``.
    """
    if ca_pem is None and not insecure:
        raise TransportError("enrollment needs the server CA (--ca-file) or --insecure-dev")
    if (state_dir / CREDENTIALS / "identity.json").exists() and not force:
        raise TransportError(
            f"{state_dir} is already enrolled ({CREDENTIALS}/identity.json exists); its store belongs to that "
            "identity: use a new state directory, or --force to replace the credentials"
        )
    if ca_pem is not None and not insecure:
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            raise TransportError("the server CA file is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    key_pem, csr_pem = make_csr()
    if insecure or ca_pem is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca_pem))
    with channel:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        try:
            response = stub.Enroll(enrollment_pb2.EnrollRequest(token=token, csr_pem=csr_pem), timeout=timeout)
        except grpc.RpcError as exc:
            raise _enroll_failure(exc, address, signals_address) from None
    if ca_pem is not None and response.ca_certificate_pem.strip() != ca_pem.strip():
        raise TransportError("the server returned a CA certificate different from the pinned one; not enrolling")
    trust_root = accept_trust_root(state_dir, bytes(response.trust_root))  # before anything is written
    schema = SignalSchema.from_proto(response.signal_schema)
    private_dir(state_dir)
    creds = private_dir(state_dir / CREDENTIALS)
    write_atomic(creds / "client.key", key_pem)
    write_atomic(creds / "client.crt", bytes(response.client_certificate_pem))
    write_atomic(creds / "ca.crt", bytes(response.ca_certificate_pem))
    server = signals_address or address
    identity = {
        "tenant_id": response.tenant_id,
        "cohort": response.cohort,
        "server": server,
        "insecure_dev": insecure,
    }
    write_atomic(creds / "identity.json", json.dumps(identity, indent=2, sort_keys=True).encode())
    if trust_root is not None:
        private_dir((state_dir / TRUST_ROOT).parent)
        write_atomic(state_dir / TRUST_ROOT, trust_root)
    write_atomic(state_dir / SCHEMA_FILE, schema.to_json().encode())
    return Enrollment(response.tenant_id, response.cohort, server, schema, state_dir)


def _enroll_failure(exc: grpc.RpcError, address: str, signals_address: str | None) -> TransportError:
    """A one-line error that tells an unreachable endpoint from a server that answered no."""
    code = exc.code() if hasattr(exc, "code") else None
    details = str(exc.details() if hasattr(exc, "details") else "")
    if code in UNREACHABLE_CODES and "handshake" in details.lower():
        return TransportError(
            f"the enrollment endpoint {address} presents a certificate not signed by the pinned CA (--ca-file): "
            "check that the CA file is this server's; not enrolling"
        )
    if code in UNREACHABLE_CODES:
        if signals_address and signals_address != address:
            where = (f"the enrollment endpoint {address} (by default the --server port + 1: the server takes "
                     f"enrollments on its own server-authenticated TLS port next to {signals_address}; "
                     "pass --enroll-server if yours differs)")
        else:
            where = f"the enrollment endpoint {address}"
        return TransportError(f"cannot reach {where}: {rpc_failure(exc)}; is the server running there?")
    return TransportError(f"the server refused the enrollment at {address}: {rpc_failure(exc)}")
