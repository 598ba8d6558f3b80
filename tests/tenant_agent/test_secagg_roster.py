"""The tenant's roster checks and masking key, without a server."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fedsignal.v1 import secagg_pb2

from aggregation.clock import system_clock
from aggregation.secagg import generate_keypair
from server.identity.ca import CertificateAuthority
from server.secagg.roster import statement
from tenant_agent.secagg import RosterRejected, RosterVerifier, load_or_create_masking_key, roster_statement


def _entry(ca: CertificateAuthority, tenant: str, cohort: str, *, signed_cohort: str | None = None,
           public: bytes | None = None) -> secagg_pb2.RosterEntry:
    key_pem, issued = ca.issue_key_and_cert(tenant, cohort, "tenant")
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = public or generate_keypair()[1]
    sig = key.sign(roster_statement(signed_cohort or cohort, tenant, public), ec.ECDSA(hashes.SHA256()))
    return secagg_pb2.RosterEntry(tenant_id=tenant, public_key=public, signature=sig,
                                  certificate_pem=issued.certificate_pem)


def test_tenant_and_server_sign_the_same_statement() -> None:
    public = generate_keypair()[1]
    assert roster_statement("retail", "acme", public) == statement("retail", "acme", public)
    assert roster_statement("retail", "acme", public) != roster_statement("travel", "acme", public)


def test_the_masking_key_is_private_to_its_owner_and_stable(tmp_path: Path) -> None:
    first = load_or_create_masking_key(tmp_path)
    mode = stat.S_IMODE((tmp_path / "secagg" / "masking.key").stat().st_mode)
    assert mode == 0o600
    assert load_or_create_masking_key(tmp_path) == first


def test_entries_are_checked_against_the_pinned_ca_cohort_and_signature(tmp_path: Path) -> None:

    ca = CertificateAuthority.create(tmp_path / "ca")
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    verifier = RosterVerifier(ca.certificate_pem, "retail", system_clock)
    good = _entry(ca, "acme", "retail")
    assert verifier.verify(good).tenant_id == "acme"
    with pytest.raises(RosterRejected, match="pinned CA"):
        verifier.verify(_entry(rogue, "globex", "retail"))
    with pytest.raises(RosterRejected, match="cohort"):
        verifier.verify(_entry(ca, "initech", "travel"))
    with pytest.raises(RosterRejected, match="signature"):
        verifier.verify(_entry(ca, "hooli", "retail", signed_cohort="travel"))
    renamed = secagg_pb2.RosterEntry()
    renamed.CopyFrom(good)
    renamed.tenant_id = "impostor"
    with pytest.raises(RosterRejected, match="names 'acme'"):
        verifier.verify(renamed)
    swapped = secagg_pb2.RosterEntry()
    swapped.CopyFrom(good)
    swapped.public_key = generate_keypair()[1]
    with pytest.raises(RosterRejected, match="signature"):
        verifier.verify(swapped)


def test_the_secagg_table_of_the_collector_config(tmp_path: Path) -> None:
    from tenant_agent.config import CollectorConfig

    cfg = CollectorConfig.from_dict({"state_dir": str(tmp_path),
                                     "secagg": {"own_worst_case_rho_cap": 0.5, "min_threshold_fraction": 0.6}})
    assert cfg.secagg.own_worst_case_rho_cap == 0.5 and cfg.secagg.min_threshold_fraction == 0.6
    assert CollectorConfig.from_dict({"state_dir": str(tmp_path)}).secagg.own_worst_case_rho_cap is None
