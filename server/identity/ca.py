"""The server's certificate authority: client and server certificates for mutual TLS.

Layout of ``state_dir/ca/`` (created by ``fedsignal server init``)::

    ca.key        CA private key, PEM, mode 0600
    ca.crt        CA certificate, PEM (self-signed, ECDSA P-256)
    server.key    server TLS private key, PEM, mode 0600
    server.crt    server TLS certificate, PEM, signed by the CA

Certificate encoding (what :mod:`server.identity.auth` relies on):

* every key is ECDSA P-256, every signature ECDSA-SHA256;
* client certificates carry ``CN=<subject>`` (the tenant id, or the admin's
  name), ``OU=<role>`` (``tenant`` or ``admin``) and ``O=fedsignal``;
* a SAN URI ``fedsignal://tenant/<tenant_id>?cohort=<cohort>`` binds a tenant
  certificate to its cohort; admin certificates carry
  ``fedsignal://admin/<name>``;
* extended key usage ``clientAuth``; the serial number, as lower-case hex
  without leading zeros (:func:`serial_hex`), is the certificate's key in the
  ``certificates`` table, where revocation is recorded.

Client certificates are short-lived (``CLIENT_CERT_DAYS``); the CA lives ten
years and the server certificate one year.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregation.clock import Clock, system_clock
from aggregation.errors import InvalidRequest, PreconditionFailed

Role = Literal["tenant", "admin"]
ROLES: tuple[str, ...] = ("tenant", "admin")
CLIENT_CERT_DAYS = 90
SERVER_CERT_DAYS = 365
CA_DAYS = 3650
DEFAULT_SERVER_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
URI_SCHEME = "fedsignal"


class CertificateAuthorityError(PreconditionFailed):
    """The CA is missing, unreadable, or refused to sign a request."""


class InvalidCsr(InvalidRequest, CertificateAuthorityError):
    """A certificate signing request is malformed or its signature does not verify."""


@dataclass(frozen=True)
class ClientClaims:
    """What a client certificate says about its holder."""

    subject: str
    role: Role
    cohort: str | None
    serial: str
    not_after: datetime


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: bytes
    serial: str
    not_after: datetime


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def subject_uri(subject: str, role: str, cohort: str | None) -> str:
    if role == "tenant":
        return f"{URI_SCHEME}://tenant/{quote(subject, safe='')}?cohort={quote(cohort or '', safe='')}"
    return f"{URI_SCHEME}://admin/{quote(subject, safe='')}"


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM CSR for ``key``; the CA ignores the requested name and binds its own."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def parse_client_certificate(pem: bytes) -> ClientClaims:
    """Read subject, role and cohort from a client certificate issued by this CA.

    Raises ``CertificateAuthorityError`` when the certificate does not follow
    the encoding above. The caller is responsible for having verified it.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateAuthorityError(f"unreadable client certificate: {exc}") from exc
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cns or not ous or str(ous[0].value) not in ROLES:
        raise CertificateAuthorityError("client certificate lacks the fedsignal subject (CN) or role (OU)")
    subject, role = str(cns[0].value), str(ous[0].value)
    cohort: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    bound = [u for u in uris if u.startswith(f"{URI_SCHEME}://")]
    if len(bound) != 1:
        raise CertificateAuthorityError("client certificate lacks its fedsignal:// identity URI")
    parts = urlsplit(bound[0])
    if parts.netloc != role or unquote(parts.path.lstrip("/")) != subject:
        raise CertificateAuthorityError("client certificate identity URI does not match its subject")
    if role == "tenant":
        cohort = parse_qs(parts.query).get("cohort", [""])[0]
        if not cohort:
            raise CertificateAuthorityError("tenant certificate names no cohort")
    return ClientClaims(subject, role, cohort, serial_hex(cert), cert.not_valid_after_utc)  # type: ignore[arg-type]


class CertificateAuthority:
    """A loaded CA: signs client certificates and the server's TLS certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 clock: Clock = system_clock) -> None:
        self._key = key
        self.certificate = certificate
        #: What "now" is when a caller passes no ``now`` (the server hands in its context's clock).
        self.clock = clock

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # -- creation and loading -------------------------------------------------

    @staticmethod
    def directory(state_dir: Path) -> Path:
        return Path(state_dir) / "ca"

    @classmethod
    def create(cls, state_dir: Path, *, name: str = "fedsignal CA", now: datetime | None = None,
               clock: Clock = system_clock) -> CertificateAuthority:
        """Create a new CA under ``state_dir/ca``; refuses to overwrite one."""
        directory = cls.directory(state_dir)
        if (directory / "ca.key").exists():
            raise CertificateAuthorityError(f"a CA already exists in {directory}; refusing to overwrite it")
        now = now or clock()
        key = generate_key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsignal"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        write_private(directory / "ca.key", key_pem(key))
        (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, clock)

    @classmethod
    def load(cls, state_dir: Path, *, clock: Clock = system_clock) -> CertificateAuthority:
        directory = cls.directory(state_dir)
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        except FileNotFoundError as exc:
            raise CertificateAuthorityError(
                f"no CA in {directory}: run `fedsignal server init --state-dir {state_dir}` first"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateAuthorityError(f"{directory / 'ca.key'} is not an ECDSA key")
        return cls(key, cert, clock)

    # -- issuing ----------------------------------------------------------------

    def _client_builder(self, public_key: ec.EllipticCurvePublicKey, subject: str, role: str,
                        cohort: str | None, now: datetime, days: int) -> x509.CertificateBuilder:
        if role not in ROLES:
            raise CertificateAuthorityError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "tenant" and not cohort:
            raise CertificateAuthorityError("a tenant certificate needs a cohort")
        if not subject or len(subject) > 64:
            raise CertificateAuthorityError("a certificate subject must be 1-64 characters")
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsignal"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, subject),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + timedelta(days=days), self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(subject_uri(subject, role, cohort))]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    def issue_client_cert(self, csr_pem: bytes, tenant_id: str, cohort: str | None, role: str = "tenant", *,
                          now: datetime | None = None, days: int = CLIENT_CERT_DAYS) -> IssuedCertificate:
        """Sign the CSR's public key into a client certificate bound to ``tenant_id``/``cohort``/``role``.

        The names requested in the CSR are ignored: identity is what the CA binds.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidCsr(f"the certificate signing request is not a PEM PKCS#10 CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise InvalidCsr("the certificate signing request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise InvalidCsr("the certificate signing request must carry an ECDSA P-256 public key")
        now = now or self.clock()
        cert = self._client_builder(public_key, tenant_id, role, cohort, now, days).sign(self._key, hashes.SHA256())
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), serial_hex(cert), cert.not_valid_after_utc)

    def issue_key_and_cert(self, subject: str, cohort: str | None, role: str, *, now: datetime | None = None,
                           days: int = CLIENT_CERT_DAYS) -> tuple[bytes, IssuedCertificate]:
        """Generate a key pair and issue its certificate (admin credentials, tests)."""
        key = generate_key()
        issued = self.issue_client_cert(make_csr(key, subject), subject, cohort, role, now=now, days=days)
        return key_pem(key), issued

    def issue_server_cert(self, hosts: Sequence[str] = DEFAULT_SERVER_HOSTS, *, now: datetime | None = None,
                          days: int = SERVER_CERT_DAYS) -> tuple[bytes, bytes]:
        """A TLS server key and certificate whose SANs cover ``hosts`` (names or IP addresses)."""
        if not hosts:
            raise CertificateAuthorityError("a server certificate needs at least one host name")
        now = now or self.clock()
        key = generate_key()
        sans: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsignal"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(min(now + timedelta(days=days), self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def write_server_cert(self, state_dir: Path, extra_hosts: Sequence[str] = ()) -> None:
        """Write ``server.key``/``server.crt`` covering ``extra_hosts`` plus localhost, 127.0.0.1 and ::1."""
        key, cert = self.issue_server_cert([*extra_hosts, *DEFAULT_SERVER_HOSTS])
        directory = self.directory(state_dir)
        write_private(directory / "server.key", key)
        (directory / "server.crt").write_bytes(cert)

    def verifies(self, cert_pem: bytes, now: datetime | None = None) -> bool:
        """True when ``cert_pem`` was signed by this CA and is within its validity period."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            pub = self._key.public_key()
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature, TypeError):
            return False
        now = now or self.clock()
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def server_tls_files(state_dir: Path) -> tuple[bytes, bytes, bytes]:
    """(server key, server certificate, CA certificate) for the gRPC server's credentials."""
    directory = CertificateAuthority.directory(state_dir)
    try:
        return (
            (directory / "server.key").read_bytes(),
            (directory / "server.crt").read_bytes(),
            (directory / "ca.crt").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise CertificateAuthorityError(
            f"no server certificate in {directory}: run `fedsignal server init --state-dir {state_dir}` "
            "(or serve with --insecure-dev for local development only)"
        ) from exc


def write_credentials_dir(directory: Path, key_pem_bytes: bytes, cert_pem: bytes, ca_pem: bytes,
                          identity: dict[str, str]) -> None:
    """Write ``client.key`` (0600), ``client.crt``, ``ca.crt`` and ``identity.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "client.key", key_pem_bytes)
    (directory / "client.crt").write_bytes(cert_pem)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
