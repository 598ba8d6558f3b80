"""``fedsignal admin`` review commands: reviewer keys, trust root, candidates, approvals (audit verify lives in server.admin_cli.audit).

Signing happens here, on the reviewer's machine, over approval bytes this
process builds from the candidate it shows (:mod:`server.admin_cli.approval`):
the server's payload must equal them, and the reviewer must have been shown
that exact content; only the signature is sent back.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fedsignal.v1 import review_pb2, review_pb2_grpc
from securesystemslib.signer import Key
from tuf.api.metadata import Metadata

from aggregation.errors import FedsignalError, PreconditionFailed
from aggregation.risk import RISK_ORDER, RiskClass, UnknownRiskClass
from aggregation.trust_root import RISK_CLASSES_FIELD, to_json_bytes
from aggregation.trust_root_build import build_root, key_from_public_json, public_key_json
from server.admin_cli import approval, reviewer_keys
from server.admin_cli.common import add_connection_args, admin_channel, print_json


class CandidateNotReviewable(PreconditionFailed):
    """The server reports the candidate past review (same exit status as a server refusal)."""

    exit_code = 3


REVIEWABLE_STATES = ("proposed", "edited")


def register(sub: Any) -> None:
    """Add this module's ``fedsignal admin`` subcommands to ``sub``."""
    p = sub.add_parser("keygen", help="create a reviewer's Ed25519 key pair (private key encrypted)",
                       description="Create <name>.key (PKCS#8, encrypted with a passphrase from --passphrase-file, "
                                   f"${reviewer_keys.PASSPHRASE_ENV} or a prompt) and <name>.pub.json; prints the key id.")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for the key files (default: .)")
    p.add_argument("--name", default="reviewer", help="file name stem (default: reviewer)")
    p.add_argument("--passphrase-file", type=Path, default=None)
    p.set_defaults(func=cmd_keygen)

    root = sub.add_parser("root", help="create, rotate, sign, show the trust root of reviewer keys",
                          description="The trust root lists reviewer keys, thresholds per risk class and the server's key.")
    rsub = root.add_subparsers(dest="root_command", metavar="COMMAND", required=True)
    for name, helptext in (("init", "sign and install trust root version 1"),
                           ("rotate", "sign and install version N+1 (needs N's threshold and its own)")):
        p = rsub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--reviewer", type=Path, action="append", required=True, metavar="PUB_JSON",
                       help="a reviewer public key file (repeat for each reviewer)")
        p.add_argument("--key", type=Path, action="append", default=[], metavar="KEY",
                       help="a private key to sign with here (repeat); others can add theirs with `root sign`")
        p.add_argument("--root-threshold", type=int, default=None,
                       help="signatures needed for the next root (default and minimum: the highest class threshold)")
        p.add_argument("--threshold", action="append", default=[], metavar="CLASS=N",
                       help="signatures per risk class (init: default low=1, high=2, critical=3; rotate: "
                            "the current root's); each at most the number of --reviewer keys")
        p.add_argument("--server-key", type=Path, default=None, help="server public key file (default: the server's)")
        p.add_argument("--days", type=int, default=365, help="root lifetime in days")
        p.add_argument("--out", type=Path, default=None, help="write the (partly) signed root here instead of submitting")
        p.add_argument("--passphrase-file", type=Path, default=None)
        add_connection_args(p)
        p.set_defaults(func=cmd_root_build, root_version_mode=name)
    p = rsub.add_parser("sign", help="add your signature to a root file written with --out")
    p.add_argument("file", type=Path)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--passphrase-file", type=Path, default=None)
    p.set_defaults(func=cmd_root_sign)
    p = rsub.add_parser("submit", help="install a signed root file (RotateTrustRoot)")
    p.add_argument("file", type=Path)
    add_connection_args(p)
    p.set_defaults(func=cmd_root_submit)
    p = rsub.add_parser("show", help="print the current (or --version N) trust root")
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the raw signed metadata")
    add_connection_args(p)
    p.set_defaults(func=cmd_root_show)

    p = sub.add_parser("candidates", help="list candidates or show one",
                       description="`candidates` / `candidates list` lists; `candidates show ID` shows one with evidence.")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("id", nargs="?", default="")
    p.add_argument("--state", default="")
    p.add_argument("--cohort", default="")
    p.add_argument("--json", action="store_true")
    _review_state_arg(p)
    add_connection_args(p)
    p.set_defaults(func=cmd_candidates)

    p = sub.add_parser(
        "approve", help="sign a candidate you were shown with your key and submit the signature",
        description="Builds the approval from the artifacts, risk class, cohort and plan it shows, refuses when the "
                    "server's payload differs, and signs only content you were shown unchanged before (by "
                    "`candidates show` or an earlier `approve`); a changed candidate is shown as a diff first.")
    p.add_argument("id")
    p.add_argument("--key", type=Path, required=True, help="your reviewer private key file")
    p.add_argument("--passphrase-file", type=Path, default=None)
    _review_state_arg(p)
    add_connection_args(p)
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("reject", help="reject a candidate (with a reason for the audit log)")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    add_connection_args(p)
    p.set_defaults(func=cmd_reject)

    p = sub.add_parser("edit", help="replace a candidate's artifacts or rollout plan (earlier signatures stop counting)")
    p.add_argument("id")
    p.add_argument("--artifact", action="append", default=[], metavar="NAME=FILE")
    p.add_argument("--plan", type=Path, default=None, help="rollout plan JSON file")
    add_connection_args(p)
    p.set_defaults(func=cmd_edit)


def _review_state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--review-state", type=Path, default=None, metavar="DIR",
                   help="where this reviewer's record of what they were shown lives (default: "
                        f"${approval.REVIEW_STATE_ENV} or ~/.local/state/fedsignal/reviews)")


def _records(args: argparse.Namespace) -> approval.ReviewRecords:
    return approval.ReviewRecords(args.review_state or approval.default_review_state(), args.server)


def _review(args: argparse.Namespace) -> review_pb2_grpc.ReviewServiceStub:
    return review_pb2_grpc.ReviewServiceStub(admin_channel(args))


def cmd_keygen(args: argparse.Namespace) -> int:
    key = reviewer_keys.generate(args.out, args.name, reviewer_keys.passphrase(args.passphrase_file, confirm=True))
    print(key.keyid)
    return 0


def _thresholds(items: Sequence[str]) -> dict[str, int]:
    """``--threshold CLASS=N`` options (classes not named keep their defaults in ``build_root``)."""
    out: dict[str, int] = {}
    for item in items:
        cls, _, n = item.partition("=")
        try:
            name = RiskClass.parse(cls)
        except UnknownRiskClass:
            name = None
        if name is None or not n.isdigit():
            raise FedsignalError(f"--threshold {item!r}: expected {'|'.join(RISK_ORDER)}=N")
        out[name.value] = int(n)
    return out


def cmd_root_build(args: argparse.Namespace) -> int:
    stub = _review(args)
    current = stub.GetTrustRoot(review_pb2.GetTrustRootRequest(version=0))
    if args.root_version_mode == "init" and current.version != 0:
        raise FedsignalError(f"a trust root (v{current.version}) is installed; use `admin root rotate`")
    if args.root_version_mode == "rotate" and current.version == 0:
        raise FedsignalError("no trust root installed yet; use `admin root init`")
    thresholds = _thresholds(args.threshold)
    server_key: Key
    if args.server_key:
        server_key = reviewer_keys.load_public(args.server_key)
    elif current.version == 0:
        server_key = key_from_public_json(json.loads(current.root)["server_key"])
    else:
        root = Metadata.from_bytes(bytes(current.root)).signed
        server_key = root.keys[root.roles["snapshot"].keyids[0]]
        # A rotation keeps the current class thresholds unless --threshold changes them.
        current_classes = root.unrecognized_fields.get(RISK_CLASSES_FIELD) or {}
        thresholds = {c: int(spec["threshold"]) for c, spec in current_classes.items()} | thresholds
    md = build_root(
        [reviewer_keys.load_public(p) for p in args.reviewer], server_key,
        now=datetime.now(UTC), version=current.version + 1, root_threshold=args.root_threshold,
        thresholds=thresholds, lifetime=_days(args.days),
    )
    if args.key:
        secret = reviewer_keys.passphrase(args.passphrase_file)
        for key_path in args.key:
            md.sign(reviewer_keys.load_signer(key_path, secret), append=True)
    if args.out:
        args.out.write_bytes(to_json_bytes(md))
        print(f"wrote trust root v{md.signed.version} with {len(md.signatures)} signature(s) to {args.out}")
        return 0
    done = stub.RotateTrustRoot(review_pb2.RotateTrustRootRequest(root=to_json_bytes(md)))
    print(f"trust root v{done.version} installed")
    return 0


def _days(n: int) -> timedelta:
    return timedelta(days=n)


def cmd_root_sign(args: argparse.Namespace) -> int:
    md = Metadata.from_bytes(args.file.read_bytes())
    md.sign(reviewer_keys.load_signer(args.key, reviewer_keys.passphrase(args.passphrase_file)), append=True)
    args.file.write_bytes(to_json_bytes(md))
    print(f"{args.file}: {len(md.signatures)} signature(s)")
    return 0


def cmd_root_submit(args: argparse.Namespace) -> int:
    done = _review(args).RotateTrustRoot(review_pb2.RotateTrustRootRequest(root=args.file.read_bytes()))
    print(f"trust root v{done.version} installed")
    return 0


def cmd_root_show(args: argparse.Namespace) -> int:
    got = _review(args).GetTrustRoot(review_pb2.GetTrustRootRequest(version=args.version))
    if args.json or got.version == 0:
        print(bytes(got.root).decode("utf-8"))
        return 0
    root = Metadata.from_bytes(bytes(got.root)).signed
    print_json({
        "version": root.version, "expires": root.expires.isoformat(),
        "root": {"keyids": root.roles["root"].keyids, "threshold": root.roles["root"].threshold},
        "risk_classes": root.unrecognized_fields.get(RISK_CLASSES_FIELD),
        "server_keys": [public_key_json(root.keys[k]) for k in root.roles["snapshot"].keyids],
    })
    return 0


def _summary(c: review_pb2.Candidate) -> str:
    return (f"{c.id}  {c.state:<11} {c.cohort:<12} {c.category:<18} {c.risk_class:<8} "
            f"signatures {len(c.signed_by)}/{c.threshold}  {', '.join(a.name for a in c.artifacts)}")


def _candidate_doc(c: review_pb2.Candidate) -> dict[str, Any]:
    return {
        "id": c.id, "state": c.state, "cohort": c.cohort, "category": c.category, "risk_class": c.risk_class,
        "threshold": c.threshold, "signed_by": list(c.signed_by), "created_at": c.created_at,
        "bundle_version": c.bundle_version, "evidence": json.loads(c.evidence_json or "{}"),
        "rollout_plan": json.loads(c.rollout_plan_json or "{}"),
        "artifacts": [{"name": a.name, "kind": a.kind, "sha256": a.sha256, "length": a.length,
                       "content": a.content.decode("utf-8", errors="replace")} for a in c.artifacts],
    }


def cmd_candidates(args: argparse.Namespace) -> int:
    stub = _review(args)
    if args.action == "show":
        if not args.id:
            raise FedsignalError("`candidates show` needs a candidate id")
        c = stub.GetCandidate(review_pb2.GetCandidateRequest(id=args.id))
        if args.json:
            print_json(_candidate_doc(c))
            return 0
        text, _previous, _current = approval.show_and_record(c, _records(args), datetime.now(UTC))
        print(text)
        return 0
    got = stub.ListCandidates(review_pb2.ListCandidatesRequest(state=args.state, cohort=args.cohort))
    if args.json:
        print_json([_candidate_doc(c) for c in got.candidates])
    else:
        for c in got.candidates:
            print(_summary(c))
        if not got.candidates:
            print("no candidates")
    return 0


def _confirm_on_terminal(text: str) -> bool:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    print(text)
    try:
        return input("sign exactly this content? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_approve(args: argparse.Namespace) -> int:
    stub = _review(args)
    c = stub.GetCandidate(review_pb2.GetCandidateRequest(id=args.id))
    if c.state not in REVIEWABLE_STATES:
        raise CandidateNotReviewable(
            f"candidate {c.id} is {c.state}; only proposed or edited candidates can be approved"
        )
    prompted: list[bool] = []

    def confirm(text: str) -> bool:
        prompted.append(True)
        return _confirm_on_terminal(text)

    decision = approval.decide(c, _records(args), datetime.now(UTC), confirm=confirm)
    if not (prompted and sys.stdin.isatty() and sys.stdout.isatty()):
        print(decision.text)
    if decision.payload is None:
        raise decision.refusal or approval.NotYetReviewed(f"candidate {c.id}: nothing was signed")
    payload = decision.payload
    signer = reviewer_keys.load_signer(args.key, reviewer_keys.passphrase(args.passphrase_file))
    sig = signer.sign(payload)
    done = stub.ApproveCandidate(review_pb2.ApproveCandidateRequest(
        id=c.id, keyid=sig.keyid, signature=bytes.fromhex(sig.signature), signing_payload=payload))
    print(_summary(done))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    print(_summary(_review(args).RejectCandidate(review_pb2.RejectCandidateRequest(id=args.id, reason=args.reason))))
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    stub = _review(args)
    current = stub.GetCandidate(review_pb2.GetCandidateRequest(id=args.id))
    kinds = {a.name: a.kind for a in current.artifacts}
    specs = []
    for item in args.artifact:
        name, _, path = item.partition("=")
        if not path:
            raise FedsignalError(f"--artifact {item!r}: expected NAME=FILE")
        specs.append(review_pb2.ArtifactSpec(name=name, kind=kinds.get(name, current.artifacts[0].kind),
                                             content=Path(path).read_bytes()))
    done = stub.EditCandidate(review_pb2.EditCandidateRequest(
        id=args.id, artifacts=specs, rollout_plan_json=args.plan.read_text() if args.plan else ""))
    print(_summary(done))
    return 0
