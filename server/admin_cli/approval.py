"""What a reviewer signs is what this tool showed them, built here — never bytes the server handed over.

``fedsignal admin approve`` rebuilds the approval metadata from the fields it
displays (cohort, candidate id, category, risk class, artifacts with their
contents, rollout plan, creation time) with the same kernel function the
server and the tenants use (:func:`aggregation.bundle_format.build_approval`).
The only thing taken from the server's payload is the revision number, a
counter; the signature covers the rebuilt bytes, and the server's payload
must equal them byte for byte, or nothing is signed (a compromised server
cannot show one artifact set and collect a signature over another).

The tool keeps a small record per reviewer (a directory on their machine)
of what each candidate looked like when it was last shown to them. It signs
only content this reviewer has been shown unchanged: a candidate edited since
(``admin edit`` between show and approve) is shown again as a diff and not
signed until the reviewer runs ``approve`` again on the new revision.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedsignal.v1 import review_pb2

from aggregation.bundle_format import APPROVAL_FIELD, build_approval
from aggregation.errors import FedsignalError
from aggregation.rollout_plan import plan_for_candidate
from aggregation.trust_root import canonical_signed_bytes

REVIEW_STATE_ENV = "FEDSIGNAL_REVIEW_STATE"


class PayloadMismatch(FedsignalError):
    """The server's signing payload is not the candidate it displays (nothing was signed)."""

    exit_code = 4


class NotYetReviewed(FedsignalError):
    """The candidate's current content was not shown to this reviewer before (it is now; run again)."""

    exit_code = 5


def default_review_state() -> Path:
    """``$FEDSIGNAL_REVIEW_STATE``, else ``$XDG_STATE_HOME/fedsignal/reviews``, else ``~/.local/state/...``."""
    if os.environ.get(REVIEW_STATE_ENV):
        return Path(os.environ[REVIEW_STATE_ENV]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fedsignal" / "reviews"


def _server_payload(c: review_pb2.Candidate) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(c.signing_payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadMismatch(f"candidate {c.id}: the server's signing payload is not JSON ({exc}); not signing") from None
    if not isinstance(doc, dict):
        raise PayloadMismatch(f"candidate {c.id}: the server's signing payload is not approval metadata; not signing")
    return doc


def revision_of(c: review_pb2.Candidate) -> int:
    """The revision counter the server's payload carries (its TUF ``version``)."""
    version = _server_payload(c).get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PayloadMismatch(f"candidate {c.id}: the server's signing payload has no valid revision; not signing")
    return version


def displayed_fields(c: review_pb2.Candidate) -> dict[str, Any]:
    """Everything the signature will cover, as this tool shows it."""
    return {
        "candidate_id": c.id,
        "cohort": c.cohort,
        "category": c.category,
        "risk_class": c.risk_class,
        "created_at": c.created_at,
        "rollout_plan": json.loads(c.rollout_plan_json or "{}"),
        "artifacts": [{"name": a.name, "kind": a.kind, "sha256": hashlib.sha256(bytes(a.content)).hexdigest(),
                       "content_b64": base64.b64encode(bytes(a.content)).decode("ascii")} for a in c.artifacts],
    }


def build_payload(c: review_pb2.Candidate) -> bytes:
    """The canonical approval bytes for the candidate as displayed (revision from the server's payload)."""
    try:
        created = datetime.fromisoformat(c.created_at)
        md = build_approval(
            cohort=c.cohort, candidate_id=c.id, risk_class=c.risk_class, category=c.category,
            artifacts=[(a.name, a.kind, bytes(a.content)) for a in c.artifacts],
            rollout_plan=json.loads(c.rollout_plan_json or "{}"), created_at=created, revision=revision_of(c),
        )
    except (ValueError, TypeError) as exc:
        raise PayloadMismatch(f"candidate {c.id} cannot be rebuilt from what the server shows ({exc}); not signing") from None
    return canonical_signed_bytes(md)


def _differences(c: review_pb2.Candidate, ours: bytes) -> list[str]:
    """Which displayed fields the server's payload contradicts (for the refusal message)."""
    theirs = _server_payload(c)
    mine = json.loads(ours)
    out = []
    a, b = mine.get(APPROVAL_FIELD, {}), (theirs.get(APPROVAL_FIELD) or {})
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: shown {a.get(key)!r}, payload {b.get(key)!r}")
    if mine.get("targets") != theirs.get("targets"):
        out.append(f"artifacts: shown {sorted(mine.get('targets') or {})} with their hashes, payload "
                   f"{sorted(theirs.get('targets') or {})} with other names, kinds or hashes")
    for key in sorted((set(mine) | set(theirs)) - {APPROVAL_FIELD, "targets"}):
        if mine.get(key) != theirs.get(key):
            out.append(f"{key}: shown {mine.get(key)!r}, payload {theirs.get(key)!r}")
    return out or ["the bytes differ (encoding)"]


def verified_payload(c: review_pb2.Candidate) -> bytes:
    """The payload to sign: rebuilt here, and equal to the server's; else :class:`PayloadMismatch`."""
    ours = build_payload(c)
    if ours != bytes(c.signing_payload):
        raise PayloadMismatch(
            f"candidate {c.id}: the server asks for a signature over content other than what it shows "
            f"({'; '.join(_differences(c, ours))}); not signing. Report this server."
        )
    return ours


def digest(payload: bytes) -> str:
    """What reviewers can compare out of band: SHA-256 of the canonical approval bytes."""
    return hashlib.sha256(payload).hexdigest()


def _iso(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def _evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    lines = [f"  rule: {evidence.get('rule', '?')}  (remediation map {evidence.get('remediation_map_version', '?')})"]
    for cell in evidence.get("cells") or []:
        sl = ", ".join(f"{k}={v}" for k, v in sorted((cell.get("slice") or {}).items()))
        lines.append(
            f"  window {_iso(cell.get('window_start'))} .. {_iso(cell.get('window_end'))}  {cell.get('measure')}  [{sl}]"
        )
        if all(isinstance(cell.get(k), int | float) for k in ("rate", "rate_low", "rate_high")):
            lines.append(f"    rate {cell['rate']:.1%}  interval [{cell['rate_low']:.1%}, {cell['rate_high']:.1%}]"
                         f"  estimate {cell.get('estimate')}  tenants {cell.get('tenants')}")
    if reference := evidence.get("reference"):
        lines.append("  reference: " + ", ".join(f"{k}={v}" for k, v in sorted(reference.items())))
    for key in sorted(set(evidence) - {"rule", "remediation_map_version", "cells", "reference"}):
        lines.append(f"  {key}: {evidence[key]}")
    return lines


def _plan_lines(plan: Mapping[str, Any], risk_class: str) -> list[str]:
    lines = []
    if not plan:
        try:
            plan = plan_for_candidate(risk_class, None).to_dict()
        except FedsignalError as exc:
            return [f"  (the {risk_class} class's shipped plan, which cannot be read here: {exc})"]
        lines.append(f"  (no override: the shipped plan of the {risk_class} class)")
    stages = plan.get("stages") or []
    if stages:
        lines.append("  stages: " + " -> ".join(
            f"{s.get('percent')}% (>= {s.get('min_windows')} window(s))" if isinstance(s, Mapping) else str(s)
            for s in stages))
    for g in plan.get("gates") or []:
        if isinstance(g, Mapping):
            lines.append(f"  gate: {g.get('measure')} must not {g.get('direction')} by more than {g.get('margin')}")
    rest = {k: v for k, v in plan.items() if k not in ("stages", "gates")}
    if rest:
        lines.append("  " + json.dumps(rest, sort_keys=True))
    return lines


def _body_lines(c: review_pb2.Candidate, payload_digest: str | None) -> list[str]:
    """The fields the signature covers, as shown (no state or signature counts: those change by themselves)."""
    lines = [
        f"  cohort:      {c.cohort}",
        f"  category:    {c.category}",
        f"  risk class:  {c.risk_class}",
        f"  created:     {_iso(c.created_at)}",
    ]
    if payload_digest:
        lines.append(f"  revision:    {revision_of(c)}   content digest {payload_digest}")
    lines.append("rollout plan:")
    lines += _plan_lines(json.loads(c.rollout_plan_json or "{}"), c.risk_class)
    lines.append("evidence:")
    lines += _evidence_lines(json.loads(c.evidence_json or "{}"))
    lines.append(f"artifacts ({len(c.artifacts)}):")
    for a in c.artifacts:
        content = bytes(a.content)
        lines.append(f"  {a.name}  kind {a.kind}  {len(content)} bytes  sha256 {hashlib.sha256(content).hexdigest()}")
        lines += [f"    | {line}" for line in content.decode("utf-8", errors="replace").splitlines() or [""]]
    return lines


def render(c: review_pb2.Candidate, payload_digest: str | None = None) -> str:
    """A reviewer-readable view of a candidate: what it ships, its risk class, plan, evidence; ISO times."""
    head = [f"candidate {c.id}  ({c.state})",
            f"  signatures:  {len(c.signed_by)} of the {c.threshold} its risk class needs"
            + (f"  (bundle v{c.bundle_version})" if c.bundle_version else "")]
    return "\n".join(head + _body_lines(c, payload_digest))


@dataclass(frozen=True)
class Seen:
    """What a candidate looked like when it was last shown to this reviewer."""

    revision: int
    digest: str
    view: str
    shown_at: str


class ReviewRecords:
    """Per reviewer, per server: the last view of each candidate shown (files 0600 in a 0700 directory)."""

    def __init__(self, directory: Path, server: str) -> None:
        self.directory = Path(directory) / hashlib.sha256(server.encode("utf-8")).hexdigest()[:16]

    def _path(self, candidate_id: str) -> Path:
        return self.directory / (hashlib.sha256(candidate_id.encode("utf-8")).hexdigest()[:32] + ".json")

    def last_seen(self, candidate_id: str) -> Seen | None:
        path = self._path(candidate_id)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return Seen(int(doc["revision"]), str(doc["digest"]), str(doc["view"]), str(doc["shown_at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # an unreadable record counts as never seen: the reviewer is shown everything again

    def record(self, c: review_pb2.Candidate, payload: bytes, now: datetime) -> Seen:
        seen = Seen(revision_of(c), digest(payload), "\n".join(_body_lines(c, digest(payload))),
                    now.astimezone(UTC).isoformat(timespec="seconds"))
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        path = self._path(c.id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"candidate_id": c.id, "revision": seen.revision, "digest": seen.digest, "view": seen.view,
                       "shown_at": seen.shown_at}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return seen


def show_and_record(c: review_pb2.Candidate, records: ReviewRecords, now: datetime) -> tuple[str, Seen | None, Seen]:
    """Verify the payload, render the candidate, and record it as shown.

    Returns the text to print (with a diff against the previous view when it changed), the previous
    record (``None`` when never shown) and the new one.
    """
    payload = verified_payload(c)
    previous = records.last_seen(c.id)
    current = records.record(c, payload, now)
    text = render(c, current.digest)
    if previous is not None and previous.digest != current.digest:
        diff = difflib.unified_diff(previous.view.splitlines(), current.view.splitlines(),
                                    f"revision {previous.revision} (shown {previous.shown_at})",
                                    f"revision {current.revision} (now)", lineterm="")
        text += "\n\nCHANGED since you last saw it:\n" + "\n".join(diff)
    return text, previous, current


@dataclass(frozen=True)
class Decision:
    """What ``approve`` may sign: ``payload`` (``None``: nothing), the text to show, and why not."""

    payload: bytes | None
    text: str
    refusal: NotYetReviewed | None = None


def decide(c: review_pb2.Candidate, records: ReviewRecords, now: datetime,
           confirm: Callable[[str], bool] | None = None) -> Decision:
    """Sign only content this reviewer was shown unchanged before (``candidates show`` or an earlier
    ``approve``), or that ``confirm(text)`` (an interactive prompt) accepts now.

    Raises :class:`PayloadMismatch` when the server's payload is not the candidate it shows.
    """
    text, previous, current = show_and_record(c, records, now)
    payload = verified_payload(c)
    if previous is not None and previous.digest == current.digest:
        return Decision(payload, text)
    if confirm is not None and confirm(text):
        return Decision(payload, text)
    if previous is None:
        return Decision(None, text, NotYetReviewed(
            f"candidate {c.id} revision {current.revision} had not been shown to you before; it is shown above "
            f"and nothing was signed. Run `fedsignal admin approve {c.id}` again to sign exactly this content "
            f"(digest {current.digest[:16]})"))
    return Decision(None, text, NotYetReviewed(
        f"candidate {c.id} changed since you last saw it (revision {previous.revision} -> {current.revision}); "
        f"the differences are shown above and nothing was signed. Run `fedsignal admin approve {c.id}` again "
        f"to sign revision {current.revision}"))
