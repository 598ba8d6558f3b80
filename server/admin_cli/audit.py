"""``fedsignal admin audit``: read the hash-chained audit log and verify it against its signed heads.

``audit verify`` asks the server to checkpoint (sign its current tail, after checking
its own chain against every stored head), downloads the whole chain and verifies it
itself with :func:`aggregation.audit.verify_chain_against_heads`: against the last
head signed before this call, the new one, and the head this machine verified last
time (kept with the server key in ``audit-head.json`` next to the admin credentials,
trusted on first use). An edited entry, a truncated or a rewritten tail fails with
exit status 2, naming the first broken entry.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fedsignal.v1 import admin_pb2, admin_pb2_grpc

from aggregation.audit import ChainedEntry, SignedHead, verify_chain, verify_chain_against_heads
from aggregation.errors import FedsignalError
from server.admin_cli.common import add_connection_args, admin_channel

PIN_FILE = "audit-head.json"
PAGE = 1000
#: ``audit show`` exit status for a broken chain.
BROKEN_EXIT = 4


class AuditChainBroken(FedsignalError):
    """The chain does not verify: an entry was edited, removed, or the tail truncated or rewritten."""

    exit_code = 2


class AuditPinMismatch(AuditChainBroken):
    """The server's audit key is not the one this machine pinned."""


def register(sub: Any) -> None:
    """Add ``fedsignal admin audit show|verify`` to ``sub``."""
    audit = sub.add_parser("audit", help="read and verify the hash-chained audit log",
                           description="Read the server's hash-chained audit log and verify it against its "
                                       "signed heads.")
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

    p = audit_sub.add_parser(
        "verify", help="verify the whole chain against the server's signed heads (checkpoints one)",
        description="Checkpoint a signed head, download the whole audit chain and verify it against the last "
                    "signed head, the new one and the head this machine verified last (--pin-file, default "
                    f"{PIN_FILE} in the credentials directory). Exit status 2, naming the first broken entry's "
                    "seq: an edited entry, a truncated or a rewritten tail.",
    )
    p.add_argument("--pin-file", type=Path, default=None,
                   help=f"where the last verified head and the server key are kept (default: {PIN_FILE} in "
                        "--credentials; none with --insecure-dev)")
    add_connection_args(p)
    p.set_defaults(func=cmd_audit_verify)


def _entries(stub: admin_pb2_grpc.AdminServiceStub, after: int = 0, limit: int = 0) -> list[ChainedEntry]:
    entries: list[ChainedEntry] = []
    while not limit or len(entries) < limit:
        want = PAGE if not limit else min(PAGE, limit - len(entries))
        resp = stub.GetAuditLog(admin_pb2.GetAuditLogRequest(after_seq=after, limit=want))
        if not resp.entries:
            break
        for e in resp.entries:
            entries.append(ChainedEntry(e.seq, e.at, e.actor, e.kind, e.payload_json, e.prev_hash, e.hash))
        after = entries[-1].seq
        if len(resp.entries) < want:
            break
    return entries


def cmd_audit_show(args: argparse.Namespace) -> int:
    with admin_channel(args) as channel:
        entries = _entries(admin_pb2_grpc.AdminServiceStub(channel), args.after, args.limit)
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
            return BROKEN_EXIT
        print(f"audit chain verified: {verdict.checked} entries")
    return 0


def _pin_path(args: argparse.Namespace) -> Path | None:
    if args.pin_file is not None:
        return Path(args.pin_file)
    if getattr(args, "credentials", None):
        return Path(args.credentials) / PIN_FILE
    return None


def _read_pin(path: Path | None) -> tuple[str | None, SignedHead | None]:
    if path is None or not path.exists():
        return None, None
    doc = json.loads(path.read_text(encoding="utf-8"))
    head = doc.get("head")
    return doc.get("public_key"), SignedHead(**head) if head else None


def _write_pin(path: Path, public_key: str, head: SignedHead) -> None:
    doc = {"public_key": public_key, "head": head.__dict__}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    pin_path = _pin_path(args)
    pinned_key, pinned_head = _read_pin(pin_path)
    with admin_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        resp = stub.GetAuditHead(admin_pb2.GetAuditHeadRequest(checkpoint=True))
        entries = _entries(stub)
    if pinned_key is not None and pinned_key != resp.public_key:
        raise AuditPinMismatch(
            f"the server signs audit heads with key {resp.public_key[:16]}…, not the key pinned in {pin_path} "
            f"({pinned_key[:16]}…); if the server key was rotated on purpose, move {pin_path} away"
        )
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(resp.public_key))
    heads = [SignedHead(h.seq, h.hash, h.at, h.keyid, h.signature) for h in resp.heads]
    if pinned_head is not None:
        heads.append(pinned_head)
    verdict = verify_chain_against_heads(entries, heads, public_key)
    if not verdict.ok:
        raise AuditChainBroken(
            f"audit chain BROKEN at entry seq {verdict.first_broken_seq}: {verdict.reason} "
            f"({verdict.checked} entries before it verified)"
        )
    if not resp.verified:
        raise AuditChainBroken(f"audit chain BROKEN on the server: {resp.problem}")
    newest = max(heads, key=lambda h: h.seq, default=None)
    if pin_path is not None and newest is not None:
        _write_pin(pin_path, resp.public_key, newest)
    where = f"; signed head at seq {newest.seq} ({newest.at})" if newest is not None else ""
    print(f"audit chain verified end to end: {verdict.checked} entries against {len(heads)} signed head(s){where}")
    return 0
