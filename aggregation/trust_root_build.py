"""Building and signing trust roots (reviewers' machines, the demo, tests).

The counterpart of :mod:`aggregation.trust_root`, which only verifies. A root
built here passes that module's checks or is refused here first, with a
:class:`RootBuildError` a CLI can print as one line:

* reviewer keys are distinct (by key id and by value) and the server's online
  key is not one of them;
* each risk class threshold is between 1 and the number of reviewers;
* the root threshold is at least the highest risk class threshold, and by
  default equals it (see :func:`aggregation.trust_root.check_root_threshold`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from securesystemslib.signer import Key, Signature, Signer, SSlibKey
from tuf.api.metadata import Metadata, Role, Root

from aggregation.bundle_errors import MalformedMetadataError
from aggregation.errors import InvalidRequest
from aggregation.risk import DEFAULT_THRESHOLDS, RISK_ORDER, RiskClass, UnknownRiskClass
from aggregation.trust_root import RISK_CLASSES_FIELD, check_keys, check_root_threshold, expiry, key_material

__all__ = [
    "RootBuildError",
    "build_root",
    "default_root_threshold",
    "key_from_public_json",
    "public_key_json",
    "resolve_thresholds",
    "sign_metadata",
]


class RootBuildError(InvalidRequest, ValueError):
    """Inputs that cannot make a valid trust root (message says which and how to fix them)."""


def resolve_thresholds(thresholds: Mapping[str, int] | None) -> dict[RiskClass, int]:
    """Every risk class's threshold: ``thresholds`` over the defaults (unknown class names refused)."""
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        try:
            out[RiskClass.parse(name)] = int(value)
        except UnknownRiskClass as exc:
            raise RootBuildError(str(exc)) from None
    return {c: out[c] for c in RISK_ORDER}


def default_root_threshold(thresholds: Mapping[str, int] | None) -> int:
    """The root threshold that follows from the class thresholds: the highest of them."""
    return max(resolve_thresholds(thresholds).values())


def build_root(
    reviewer_keys: Iterable[Key],
    server_key: Key,
    *,
    now: datetime,
    version: int = 1,
    root_threshold: int | None = None,
    thresholds: Mapping[str, int] | None = None,
    lifetime: timedelta = timedelta(days=365),
) -> Metadata[Root]:
    """Unsigned root metadata: reviewers approve (per risk class) and sign roots; the server key freshens.

    ``thresholds`` overrides the default per-class thresholds (low 1, high 2, critical 3);
    ``root_threshold`` defaults to the highest class threshold and may not be below it.
    Raises :class:`RootBuildError`.
    """
    reviewer_list = list(reviewer_keys)
    reviewers = {k.keyid: k for k in reviewer_list}
    if len(reviewers) != len(reviewer_list):
        raise RootBuildError("a reviewer key is listed twice")
    try:
        check_keys(reviewers, "reviewer keys")
        check_keys({server_key.keyid: server_key}, "server key")
    except MalformedMetadataError as exc:
        raise RootBuildError(str(exc)) from None
    if server_key.keyid in reviewers or key_material(server_key) in {key_material(k) for k in reviewer_list}:
        raise RootBuildError("the server's online key cannot also be a reviewer key")
    wanted = resolve_thresholds(thresholds)
    n = len(reviewers)
    for cls, t in wanted.items():
        if t < 1 or t > n:
            raise RootBuildError(
                f"risk class {cls}: threshold {t} needs between 1 and {n} reviewer key(s), and "
                f"{n} {'is' if n == 1 else 'are'} listed; add reviewers (--reviewer) or lower it (--threshold {cls}=N)"
            )
    if root_threshold is None:
        root_threshold = max(wanted.values())
    if not 1 <= root_threshold <= n:
        raise RootBuildError(f"root threshold {root_threshold} needs between 1 and {n} reviewer key(s)")
    try:
        check_root_threshold(root_threshold, {c.value: t for c, t in wanted.items()}, "trust root")
    except MalformedMetadataError as exc:
        raise RootBuildError(str(exc)) from None
    ids = sorted(reviewers)
    keys: dict[str, Key] = dict(reviewers)
    keys[server_key.keyid] = server_key
    roles = {
        "root": Role(list(ids), root_threshold),
        "targets": Role(list(ids), min(wanted.values())),
        "snapshot": Role([server_key.keyid], 1),
        "timestamp": Role([server_key.keyid], 1),
    }
    root = Root(
        version=version,
        expires=expiry(now, lifetime),
        keys=keys,
        roles=roles,
        consistent_snapshot=False,
        unrecognized_fields={
            RISK_CLASSES_FIELD: {c.value: {"keyids": list(ids), "threshold": t} for c, t in wanted.items()}
        },
    )
    return Metadata(root)


def sign_metadata(md: Metadata[Any], signer: Signer) -> Signature:
    """Add ``signer``'s signature over the canonical signed bytes (no key material leaves the signer)."""
    return md.sign(signer, append=True)


def key_from_public_json(doc: Mapping[str, Any]) -> SSlibKey:
    """A public key from ``{"keyid": ..., "key": {keytype, scheme, keyval}}``."""
    return SSlibKey.from_dict(doc["keyid"], dict(doc["key"]))


def public_key_json(key: Key) -> dict[str, Any]:
    return {"keyid": key.keyid, "key": key.to_dict()}
