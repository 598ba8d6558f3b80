"""A real server (mTLS on loopback, ReviewService) whose trust root lists reviewers with key files on disk.

Reviewers here are what `fedsignal admin keygen` writes (encrypted PKCS#8 + .pub.json), so the tests drive
`fedsignal admin candidates show|edit|approve` exactly as a reviewer would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from securesystemslib.signer import CryptoSigner

from server.admin_cli import reviewer_keys
from server.app import ADMIN, REVIEW, RunningServer, build_server
from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.identity import enrollment as identity
from server.identity.ca import write_credentials_dir
from server.migrate import init_db
from server.review.trust_root import bootstrap_root
from server.review.workflow import create_candidate
from tests.harness import make_pki

PASSPHRASE = "correct horse battery"
CONTENT = b'{"intent": "billing", "tool": "invoice_lookup"}'


@dataclass
class ReviewCliWorld:
    ctx: ServerContext
    running: RunningServer
    credentials: Path
    keys: dict[str, Path]
    signers: dict[str, CryptoSigner]
    passphrase_file: Path

    @property
    def target(self) -> str:
        return f"localhost:{self.running.port}"

    def conn(self) -> list[str]:
        return ["--server", self.target, "--credentials", str(self.credentials)]

    def propose(self, risk: str = "low", content: bytes = CONTENT, key: str = "k1") -> str:
        with transaction(self.ctx.sessions) as s:
            rec = create_candidate(
                s, cohort="retail", category="wrong_tool", kind="routing_rule", risk_class=risk,
                artifacts=[("routing_rule.billing", "routing_rule", content)],
                evidence={"rule": "above_threshold", "cells": [{
                    "window_start": 1_793_534_400, "window_end": 1_793_538_000, "measure": "wrong_tool",
                    "slice": {"intent": "billing"}, "estimate": 40.0, "rate": 0.2, "rate_low": 0.15,
                    "rate_high": 0.25, "tenants": 6}]},
                rollout_plan_json="{}", dedupe_key=key, now=self.ctx.clock(),
            )
            assert rec is not None
            return rec.id


@contextmanager
def review_cli_world(database_url: str, tmp_path: Path, reviewers: tuple[str, ...] = ("alice", "bob", "carol"),
                     ) -> Iterator[ReviewCliWorld]:
    state_dir = tmp_path / "state"
    ca = make_pki(state_dir)
    ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=state_dir, listen="127.0.0.1:0"))
    init_db(ctx.engine)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    keys, signers = {}, {}
    for name in reviewers:
        reviewer_keys.generate(tmp_path / "keys", name, PASSPHRASE.encode())
        keys[name] = tmp_path / "keys" / f"{name}.key"
        signers[name] = reviewer_keys.load_signer(keys[name], PASSPHRASE.encode())
    now = datetime.now(UTC)
    key, issued = ca.issue_key_and_cert("root-admin", None, "admin", now=now)
    with transaction(ctx.sessions) as session:
        identity.record_admin_certificate(session, "root-admin", issued.serial, issued.not_after, "test", now)
        bootstrap_root(session, state_dir=state_dir, reviewers=list(signers.values()), now=now)
    credentials = tmp_path / "admin-creds"
    write_credentials_dir(credentials, key, issued.certificate_pem, ca.certificate_pem,
                          {"subject": "root-admin", "role": "admin"})
    running = build_server(ctx, jobs=False, metrics_port=0, services=[ADMIN, REVIEW])
    ctx.revocations.clear()
    try:
        yield ReviewCliWorld(ctx, running, credentials, keys, signers, passphrase_file)
    finally:
        running.stop(0)
        ctx.engine.dispose()
