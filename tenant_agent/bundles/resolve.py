"""The local resolve API: which artifact version and content a session should use.

Sticky by session: in a tenant that takes part in a rollout, a session gets
the candidate when ``aggregation.rollout_plan.session_in_canary(rollout_id,
session_id, session_fraction)``; its other sessions are the rollout's
*control*: they get the stable content but the label
``aggregation.rollout_plan.control_label(rollout_id)``, so the server
compares the canary with a randomized control inside the same tenants.
Every session of a tenant that does not take part gets the stable version
with the stable label and the arm ``"stable"`` (not evidence).
The returned ``version`` is the label agents put on their telemetry
(``fedsignal.artifact.version``): the approval's label (candidate id), the
control label, or ``"baseline"`` when no installed approval provides the
artifact.

Once the active bundle's cohort metadata has expired (the resolver's clock,
an :data:`aggregation.clock.Clock`) the candidate arm is no longer served:
if a rollback cannot be delivered, canary sessions fall back to the stable
content and label instead of keeping the candidate forever.

Content is served only from verified state: the installed bundle is read
back through :func:`aggregation.bundle.verify_installed` (every byte
re-hashed against the verified metadata) when ``current`` changes, and the
verified copy is kept in memory. A bundle that fails re-verification is
never served: the resolver keeps serving the last bundle it verified, or,
when it has none (a restart over a damaged install), refuses with
:class:`InstalledBundleRefused` (HTTP 503 on the endpoint) until a good
bundle is installed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from aggregation.bundle import BASELINE, ApprovedSet, VerifiedBundle
from aggregation.bundle_errors import BundleRefused
from aggregation.clock import Clock, system_clock
from aggregation.rollout_plan import control_label, session_in_canary, session_in_shadow
from tenant_agent.bundles.store import BundleStore

log = logging.getLogger(__name__)

class Arm(StrEnum):
    """Which side of a rollout a session is on (the ``arm`` of a resolution)."""

    #: In the rollout's canary: the candidate's content and label.
    CANDIDATE = "candidate"
    #: In the rollout, outside the canary: stable content under the rollout's control label.
    CONTROL = "control"
    #: Outside any rollout (tenant not participating, no rollout, expired bundle): not evidence.
    STABLE = "stable"


CANDIDATE, CONTROL, STABLE = Arm.CANDIDATE, Arm.CONTROL, Arm.STABLE


class InstalledBundleRefused(BundleRefused):
    """The installed bundle failed re-verification on load and no verified bundle is at hand to serve instead."""

    code = "installed_bundle_refused"


@dataclass(frozen=True)
class Resolution:
    name: str
    version: str
    content: bytes
    arm: Arm
    #: In a rollout's shadow stage, for a sticky share of sessions: the candidate to run beside the
    #: live path (output discarded, telemetry with ``fedsignal.mode = shadow``); this resolution is what to serve.
    shadow: Resolution | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"name": self.name, "version": self.version, "arm": self.arm.value,
                                  "serve": self.version, "content_b64": base64.b64encode(self.content).decode("ascii")}
        with contextlib.suppress(UnicodeDecodeError):
            doc["content"] = self.content.decode("utf-8")
        if self.shadow is not None:
            doc["shadow"] = self.shadow.to_json()
        return doc


@dataclass(frozen=True)
class SessionResolution:
    """Every installed artifact as one session sees it, and the label its telemetry carries."""

    label: str
    arm: Arm
    artifacts: tuple[Resolution, ...]


class Resolver:
    """Serves the active installed bundle from verified state (re-verified whenever ``current`` changes)."""

    def __init__(self, state_dir: Path | str, tenant_id: str, clock: Clock = system_clock) -> None:
        self._store = BundleStore(Path(state_dir))
        self._tenant_id = tenant_id
        self._clock = clock
        self._lock = threading.Lock()
        # (current link target, the bundle verified from it): the last verified state.
        self._verified: tuple[str, VerifiedBundle] | None = None
        # (current link target, why it was refused): not re-read until `current` changes.
        self._refused: tuple[str, BundleRefused] | None = None

    def active(self) -> VerifiedBundle | None:
        """The bundle to serve; raises :class:`InstalledBundleRefused` when only a damaged one is installed."""
        link = self._store.current_link
        try:
            target = os.readlink(link)
        except OSError:
            return None
        with self._lock:
            if self._verified is not None and self._verified[0] == target:
                return self._verified[1]
            if self._refused is None or self._refused[0] != target:
                try:
                    bundle = self._store.load(self._store.root / target)
                except BundleRefused as exc:
                    log.error("installed bundle %s refused on load, not served: %s", target, exc)
                    self._refused = (target, exc)
                else:
                    self._verified, self._refused = (target, bundle), None
                    return bundle
            if self._verified is not None:
                return self._verified[1]  # keep serving the last verified bundle
            refused = self._refused
        raise InstalledBundleRefused(
            f"the installed bundle ({target}) fails verification and is not served: {refused[1] if refused else ''}"
        )

    def expired(self, bundle: VerifiedBundle) -> bool:
        """Whether ``bundle``'s cohort metadata has expired by the resolver's clock."""
        return bundle.expires <= self._clock()

    def resolve(self, artifact_name: str, session_id: str, intent: str | None = None) -> Resolution:
        """What ``session_id`` uses for ``artifact_name``; ``intent``: the turn's intent (per-intent rollouts).

        A rollout scoped to intents exposes only sessions of those intents;
        every other intent (and an unknown one) gets stable. In the replay
        stage nobody gets the candidate; in the shadow stage a sticky share of
        sessions gets stable to serve plus the candidate as ``shadow``.
        Raises :class:`InstalledBundleRefused` rather than serve unverified bytes.
        """
        bundle = self.active()
        if bundle is None:
            return Resolution(artifact_name, BASELINE, b"", STABLE)
        cand, exposure = bundle.candidate, bundle.exposure
        in_rollout = (
            cand is not None
            and exposure is not None
            and artifact_name in cand.artifacts
            and exposure.participates(self._tenant_id)
            and not self.expired(bundle)  # an expired bundle serves no rollout arm: stable only
            and (not exposure.intents or intent in exposure.intents)
        )
        if in_rollout and cand is not None and exposure is not None and exposure.phase != "live":
            stable = self._stable(bundle, artifact_name)
            if exposure.phase == "shadow" and session_in_shadow(exposure.rollout_id, session_id,
                                                                 exposure.session_fraction):
                shadow = Resolution(artifact_name, cand.label, bundle.content(cand, artifact_name), CANDIDATE)
                # Served: stable under its own label (not the control label), so not live-canary evidence.
                return Resolution(stable.name, stable.version, stable.content, STABLE, shadow=shadow)
            return stable  # replay: nobody is served the candidate
        if in_rollout and cand is not None and exposure is not None:
            if session_in_canary(exposure.rollout_id, session_id, exposure.session_fraction):
                return Resolution(artifact_name, cand.label, bundle.content(cand, artifact_name), CANDIDATE)
            stable = self._stable(bundle, artifact_name)
            return Resolution(artifact_name, control_label(exposure.rollout_id), stable.content, CONTROL)
        return self._stable(bundle, artifact_name)

    @staticmethod
    def _stable(bundle: VerifiedBundle, artifact_name: str) -> Resolution:
        winner: ApprovedSet | None = next(
            (a for a in reversed(bundle.stable) if artifact_name in a.artifacts), None  # later promotions win
        )
        if winner is None:
            return Resolution(artifact_name, BASELINE, b"", STABLE)
        return Resolution(artifact_name, winner.label, bundle.content(winner, artifact_name), STABLE)

    def resolve_session(self, session_id: str) -> SessionResolution:
        """All artifact names of the active bundle for ``session_id``.

        The label is the one of the rollout's candidate artifacts as this session resolves them (candidate
        label in the canary, the rollout's control label in a participating tenant's control, the stable
        label or "baseline" elsewhere or once the bundle expired); without a rollout, the newest stable
        set's label.
        """
        bundle = self.active()
        if bundle is None:
            return SessionResolution(BASELINE, STABLE, ())
        names = sorted({n for s in bundle.stable for n in s.artifacts} | set(bundle.candidate.artifacts if bundle.candidate else ()))
        resolutions = tuple(self.resolve(n, session_id) for n in names)
        if bundle.candidate is not None and bundle.candidate.artifacts:
            first = self.resolve(sorted(bundle.candidate.artifacts)[0], session_id)
            return SessionResolution(first.version, first.arm, resolutions)
        return SessionResolution(bundle.stable[-1].label if bundle.stable else BASELINE, STABLE, resolutions)


class ResolveServer:
    """A running local HTTP resolve endpoint (``GET /v1/resolve?artifact=..&session=..``)."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="fedsignal-resolve", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_resolve(resolver: Resolver, host: str = "127.0.0.1", port: int = 0) -> ResolveServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlparse(self.path)
            if url.path != "/v1/resolve":
                self._send(404, {"error": "unknown path; use /v1/resolve?artifact=NAME&session=ID"})
                return
            q = parse_qs(url.query)
            artifact, session = q.get("artifact", [""])[0], q.get("session", [""])[0]
            intent = q.get("intent", [""])[0] or None
            if not artifact or not session:
                self._send(400, {"error": "both 'artifact' and 'session' query parameters are required"})
                return
            try:
                resolution = resolver.resolve(artifact, session, intent)
            except BundleRefused as exc:
                self._send(503, {"error": str(exc), "code": exc.code})
                return
            self._send(200, resolution.to_json())

        def _send(self, status: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet access log
            return

    return ResolveServer(ThreadingHTTPServer((host, port), Handler))
