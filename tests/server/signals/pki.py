"""Real mTLS for the server-signals tests: a CA in tmp_path, certificates recorded in the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from server.context import ServerContext
from server.db import transaction
from server.identity.ca import CertificateAuthority, write_credentials_dir
from server.identity.enrollment import ensure_tenant, record_certificate


@dataclass
class Pki:
    state_dir: Path
    ca: CertificateAuthority

    @classmethod
    def create(cls, state_dir: Path) -> Pki:
        ca = CertificateAuthority.create(state_dir)
        ca.write_server_cert(state_dir)
        return cls(state_dir, ca)

    @classmethod
    def load(cls, state_dir: Path) -> Pki:
        """The CA `fedsignal server init` created in ``state_dir``."""
        return cls(state_dir, CertificateAuthority.load(state_dir))

    def issue(self, ctx: ServerContext, subject: str, role: str = "tenant", cohort: str | None = None,
              directory: Path | None = None) -> grpc.ChannelCredentials:
        """Issue and record a certificate; return credentials for a channel (and write them to ``directory``)."""
        key, issued = self.ca.issue_key_and_cert(subject, cohort, role)
        now = datetime.now(UTC)
        with transaction(ctx.sessions) as session:
            if role == "tenant":
                assert cohort is not None
                ensure_tenant(session, subject, cohort, now)
            record_certificate(session, issued.serial, subject, role, cohort, issued.not_after, now)
        if directory is not None:
            write_credentials_dir(directory, key, issued.certificate_pem, self.ca.certificate_pem,
                                  {"subject": subject, "role": role, "cohort": cohort or ""})
        return grpc.ssl_channel_credentials(self.ca.certificate_pem, key, issued.certificate_pem)
