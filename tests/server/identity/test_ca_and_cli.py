"""The CA's certificate encoding, insecure-dev identity, and the operator commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from fedsignal_cli.main import main
from server.admin_cli.common import insecure_identity_channel
from server.app import ADMIN, build_server
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import (
    CertificateAuthority,
    CertificateAuthorityError,
    InvalidCsr,
    generate_key,
    make_csr,
    parse_client_certificate,
)
from server.identity.models import CertificateRecord
from server.migrate import init_db


def test_ca_files_are_private_and_the_ca_is_not_overwritten(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path).write_server_cert(tmp_path, ["fedsignal.example", "10.0.0.7"])
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / "ca" / name).stat().st_mode) == 0o600
    with pytest.raises(CertificateAuthorityError):
        CertificateAuthority.create(tmp_path)
    server_cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "server.crt").read_bytes())
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "fedsignal.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1", "10.0.0.7"}


def test_client_certificate_encodes_subject_role_and_cohort(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    issued = ca.issue_client_cert(make_csr(generate_key(), "admin"), "acme", "retail", "tenant")
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["fedsignal://tenant/acme?cohort=retail"]
    assert cert.subject.rfc4514_string() == "CN=acme,OU=tenant,O=fedsignal"
    claims = parse_client_certificate(issued.certificate_pem)
    assert (claims.subject, claims.role, claims.cohort, claims.serial) == ("acme", "tenant", "retail", issued.serial)
    assert ca.verifies(issued.certificate_pem)
    assert not CertificateAuthority.create(tmp_path / "other").verifies(issued.certificate_pem)


def test_ca_refuses_a_csr_with_a_bad_signature_or_key_type(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    good = make_csr(generate_key(), "x")
    tampered = good.replace(good.splitlines()[3], good.splitlines()[3][:-4] + b"AAAA")
    with pytest.raises(InvalidCsr):
        ca.issue_client_cert(tampered, "acme", "retail")
    p384 = ec.generate_private_key(ec.SECP384R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(p384, hashes.SHA256())
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(InvalidCsr):
        ca.issue_client_cert(csr.public_bytes(serialization.Encoding.PEM), "acme", "retail")
    with pytest.raises(CertificateAuthorityError):
        ca.issue_client_cert(good, "acme", None, "tenant")


def test_insecure_dev_takes_identity_from_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", state_dir=tmp_path, listen="127.0.0.1:0",
                              insecure_dev=True)
    ctx = ServerContext.create(settings)
    init_db(ctx.engine)
    running = build_server(ctx, jobs=False, services=[ADMIN])
    try:
        assert "insecure-dev" in capsys.readouterr().err
        address = f"127.0.0.1:{running.port}"
        with insecure_identity_channel(address, "dev", "admin") as ch:
            resp = admin_pb2_grpc.AdminServiceStub(ch).CreateEnrollmentToken(
                admin_pb2.CreateEnrollmentTokenRequest(tenant_id="acme", cohort="retail"), timeout=10)
        assert resp.token
        with insecure_identity_channel(address, "acme", "tenant", "retail") as ch, pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminServiceStub(ch).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with grpc.insecure_channel(address) as ch, pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminServiceStub(ch).GetAuditLog(admin_pb2.GetAuditLogRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop(0)
        ctx.engine.dispose()


def test_token_is_single_use_at_the_database(database_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=tmp_path))
    init_db(ctx.engine)
    now = datetime.now(UTC)
    with transaction(ctx.sessions) as s:
        token, _ = identity.create_enrollment_token(s, "acme", "retail", timedelta(hours=1), "test", now)
    with transaction(ctx.sessions) as s:
        assert identity.redeem_token(s, token, now) == identity.TokenGrant("acme", "retail")
    with transaction(ctx.sessions) as s, pytest.raises(identity.TokenAlreadyUsed):
        identity.redeem_token(s, token, now)
    with transaction(ctx.sessions) as s, pytest.raises(identity.CohortMismatch):
        identity.create_enrollment_token(s, "acme", "finance", timedelta(hours=1), "test", now)
    with transaction(ctx.sessions) as s, pytest.raises(identity.InvalidName):
        identity.create_enrollment_token(s, "../etc", "retail", timedelta(hours=1), "test", now)
    ctx.engine.dispose()


def test_operator_commands_set_up_a_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, admin_dir = tmp_path / "state", tmp_path / "admin"
    store = ["--state-dir", str(state), "--database-url", f"sqlite:///{tmp_path / 'server.db'}"]
    assert main(["server", "init", *store, "--admin-out", str(admin_dir), "--host", "fedsignal.example"]) == 0
    ident = json.loads((admin_dir / "identity.json").read_text())
    assert ident["role"] == "admin"
    assert stat.S_IMODE((admin_dir / "client.key").stat().st_mode) == 0o600
    assert main(["server", "init", *store, "--admin-out", str(tmp_path / "again")]) == 1
    capsys.readouterr()
    assert main(["server", "enroll-token", *store, "--tenant", "acme", "--cohort", "retail", "--ttl", "60"]) == 0
    assert capsys.readouterr().out.strip().startswith("fst_")
    assert main(["server", "admin-cert", *store, "--name", "bob", "--out", str(tmp_path / "bob")]) == 0
    bob_serial = json.loads((tmp_path / "bob" / "identity.json").read_text())["serial"]
    assert main(["server", "revoke", *store, "--serial", bob_serial, "--reason", "left"]) == 0
    assert main(["server", "revoke", *store, "--tenant", "nobody", "--reason", "x"]) == 1
    ctx = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 'server.db'}", state_dir=state))
    with ctx.sessions() as s:
        bob = s.get(CertificateRecord, bob_serial)
        assert bob is not None and bob.revoked_at is not None
        assert s.get(CertificateRecord, ident["serial"]) is not None
    ctx.engine.dispose()
