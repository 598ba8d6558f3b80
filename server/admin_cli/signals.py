"""``fedsignal admin`` commands of the AdminService.

Two sections, each registered by its own function from :func:`register`:
tenants and audit (server core), signals and reports (server signals).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from aggregation.audit import ChainedEntry, verify_chain
from server.admin_cli.common import add_connection_args, admin_channel


def register(sub: Any) -> None:
    """Add this module's ``fedsignal admin`` subcommands to ``sub``."""
    register_tenants_and_audit(sub)


# ---------------------------------------------------------------------------
# Tenants and audit (owner: server core): enroll-token, revoke, audit show
# ---------------------------------------------------------------------------


def register_tenants_and_audit(sub: Any) -> None:
    p = sub.add_parser(
        "enroll-token", help="create a one-time enrollment token for a tenant",
        description="Create a one-time, expiring enrollment token that a tenant's collector exchanges "
                    "for its client certificate (`fedsignal agent enroll`). The token is shown once.",
    )
    p.add_argument("--tenant", dest="tenant_id", required=True, help="tenant id (letters, digits, '.', '_', '-')")
    p.add_argument("--cohort", required=True, help="cohort the tenant belongs to")
    p.add_argument("--ttl", type=int, default=0, help="token lifetime in seconds (default: the server's, 24 h)")
    p.add_argument("--json", action="store_true", help="print {token, expires_at} as JSON")
    add_connection_args(p)
    p.set_defaults(func=cmd_enroll_token)

    p = sub.add_parser(
        "revoke", help="revoke a tenant and all its certificates",
        description="Revoke a tenant: every certificate it holds is refused from now on (within seconds "
                    "on every replica) and its pending tokens become void. Recorded in the audit log.",
    )
    p.add_argument("--tenant", dest="tenant_id", required=True, help="tenant id")
    p.add_argument("--reason", required=True, help="why (goes to the audit log)")
    add_connection_args(p)
    p.set_defaults(func=cmd_revoke)

    audit = sub.add_parser("audit", help="read the hash-chained audit log",
                           description="Read and verify the server's hash-chained audit log.")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    p = audit_sub.add_parser(
        "show", help="print audit entries and verify their chain",
        description="Print audit log entries in order. Starting from the beginning (--after 0), the "
                    "hash chain of the printed entries is verified and the verdict printed last.",
    )
    p.add_argument("--after", type=int, default=0, help="print entries after this sequence number")
    p.add_argument("--limit", type=int, default=0, help="at most this many entries (default: all)")
    p.add_argument("--json", action="store_true", help="print entries as JSON lines")
    add_connection_args(p)
    p.set_defaults(func=cmd_audit_show)


def cmd_enroll_token(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        resp = stub.CreateEnrollmentToken(
            admin_pb2.CreateEnrollmentTokenRequest(tenant_id=args.tenant_id, cohort=args.cohort,
                                                   ttl_seconds=max(0, args.ttl))
        )
    if args.json:
        print(json.dumps({"token": resp.token, "expires_at": resp.expires_at}))
    else:
        print(resp.token)
        print(f"# tenant {args.tenant_id} (cohort {args.cohort}); single use; expires {resp.expires_at}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        resp = admin_pb2_grpc.AdminServiceStub(channel).RevokeTenant(
            admin_pb2.RevokeTenantRequest(tenant_id=args.tenant_id, reason=args.reason)
        )
    print(f"revoked tenant {args.tenant_id}: {resp.certificates_revoked} certificate(s)")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    page = 1000
    entries: list[ChainedEntry] = []
    with admin_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        after = args.after
        while not args.limit or len(entries) < args.limit:
            want = page if not args.limit else min(page, args.limit - len(entries))
            resp = stub.GetAuditLog(admin_pb2.GetAuditLogRequest(after_seq=after, limit=want))
            if not resp.entries:
                break
            for e in resp.entries:
                entries.append(ChainedEntry(e.seq, e.at, e.actor, e.kind, e.payload_json, e.prev_hash, e.hash))
            after = entries[-1].seq
            if len(resp.entries) < want:
                break
    for e in entries:
        if args.json:
            print(json.dumps({"seq": e.seq, "at": e.at, "actor": e.actor, "kind": e.kind,
                              "payload": json.loads(e.payload_json), "hash": e.hash}, sort_keys=True))
        else:
            print(f"{e.seq:>6}  {e.at}  {e.actor:<24} {e.kind:<28} {e.payload_json}")
    if args.after == 0:
        verdict = verify_chain(entries)
        if not verdict.ok:
            print(f"audit chain BROKEN at seq {verdict.first_broken_seq}: {verdict.reason}")
            return 4
        print(f"audit chain verified: {verdict.checked} entries")
    return 0


# ---------------------------------------------------------------------------
# Signals and reports (owner: server signals): `admin signals`, `admin report`
# ---------------------------------------------------------------------------
