"""Federated offline replay, run by the tenant: the harness client, the runner, and the one release path.

When the active bundle carries a candidate in its ``replay`` phase, the
collector replays its own cases (:mod:`tenant_agent.replay_set`) through the
tenant's **agent harness** (an HTTP endpoint the tenant configures; the
contract is docs/harness.md): every case once with the stable artifacts and
once with the candidate's. Each answer is the replayed turn, as a decision
event (the JSONL schema) or as OTLP spans (protobuf JSON). The turn is
classified with the taxonomy and scored against the case's gold label
(``task_success`` means "the replayed turn is right": none of the case's
failure categories and every tool the gold label expects), then released.

:func:`release_slices` is the one release path of evaluation results
(replay here, paired shadow outcomes in :mod:`tenant_agent.shadow`): it
turns them into contributions of the collector's ordinary window table,
under labels of their own (``replay-stable-<rollout>`` /
``replay-candidate-<rollout>``), charged to the case's privacy unit. The
window's sealing then bounds them, draws the DP noise, spends the ledger
and (under secure aggregation) masks them like every other cell: no
separate mechanism, no separate budget, nothing un-noised leaves.

A harness that is missing, failing, slow or answers garbage yields a
:class:`ReplayRun` with that status and a message for the operator, never
an exception into the collector's loop; :func:`replay_in_background` runs a
replay in its own thread so windows, delivery and resolve go on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from aggregation.bundle import VerifiedBundle
from aggregation.clock import Clock, to_unix
from aggregation.errors import FedsignalError
from aggregation.events import EVENT_SCHEMA_VERSION, DecisionEvent
from aggregation.rollout_plan import ReplayArm, replay_label
from aggregation.schema import TURNS
from aggregation.taxonomy import Taxonomy
from tenant_agent.replay_set import NOT_FAILURES, ReplayCase, ReplaySet
from tenant_agent.windows import RecordResult, WindowBook

log = logging.getLogger(__name__)

HARNESS_SCHEMA = "fedsignal-harness/1"
#: Largest harness answer read (bytes): a harness cannot make the collector buffer without bound.
MAX_ANSWER_BYTES = 1024 * 1024
HarnessStatus = Literal["ok", "missing", "failing", "slow", "malformed", "no_cases", "not_ready"]


class HarnessError(FedsignalError):
    """One harness call that did not give a usable replayed turn (``status`` says how)."""

    def __init__(self, status: HarnessStatus, message: str) -> None:
        super().__init__(message)
        self.status: HarnessStatus = status


@dataclass(frozen=True)
class ArtifactContent:
    name: str
    version: str
    content: bytes

    def to_json(self) -> dict[str, str]:
        doc = {"name": self.name, "version": self.version, "content_b64": base64.b64encode(self.content).decode()}
        with contextlib.suppress(UnicodeDecodeError):
            doc["content"] = self.content.decode("utf-8")
        return doc


class HarnessClient:
    """POSTs one case + artifacts to the tenant's harness and returns the replayed turn (docs/harness.md)."""

    def __init__(self, url: str, tenant_id: str, *, timeout_seconds: float = 5.0,
                 taxonomy_redactor: Any = None) -> None:
        self.url = url
        self.tenant_id = tenant_id
        self.timeout = timeout_seconds
        self._redactor = taxonomy_redactor

    def replay(self, case: ReplayCase, arm: ReplayArm, turn_id: str,
               artifacts: Sequence[ArtifactContent]) -> DecisionEvent:
        body = json.dumps({"schema": HARNESS_SCHEMA, "turn_id": turn_id, "arm": arm, "case": case.to_json(),
                           "artifacts": [a.to_json() for a in artifacts]}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - tenant-configured URL
                raw = resp.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise HarnessError("failing", f"harness answered HTTP {exc.code} for {turn_id}") from None
        except TimeoutError:
            raise HarnessError("slow", f"harness did not answer {turn_id} within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise HarnessError("slow", f"harness did not answer {turn_id} within {self.timeout:g} s") from None
            raise HarnessError("failing", f"harness unreachable at {self.url}: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:
            raise HarnessError("failing", f"harness connection failed: {exc}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise HarnessError("malformed", f"harness answer for {turn_id} is larger than {MAX_ANSWER_BYTES} bytes")
        return self._parse(raw, turn_id)

    def _parse(self, raw: bytes, turn_id: str) -> DecisionEvent:
        from tenant_agent.ingest.records import EventFormatError, event_from_dict
        from tenant_agent.redact import Redactor

        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HarnessError("malformed", f"harness answer for {turn_id} is not JSON") from None
        if not isinstance(doc, dict):
            raise HarnessError("malformed", f"harness answer for {turn_id} is not a JSON object")
        if doc.get("turn_id") != turn_id:
            raise HarnessError("malformed", f"harness answered turn {doc.get('turn_id')!r}, not {turn_id!r}")
        redactor = self._redactor or Redactor()
        try:
            if isinstance(doc.get("event"), dict):
                defaults = {"schema_version": EVENT_SCHEMA_VERSION, "session_id": turn_id, "timestamp": time.time()}
                return event_from_dict({**defaults, **doc["event"]},
                                       self.tenant_id, redactor)
            if isinstance(doc.get("otlp"), dict):
                from tenant_agent.ingest.otlp import OtlpMapper

                request = json_format.ParseDict(doc["otlp"], ExportTraceServiceRequest())
                events = OtlpMapper(self.tenant_id, redactor).map_traces(request)
                if len(events) != 1:
                    raise HarnessError("malformed", f"harness spans for {turn_id} make {len(events)} turns, not 1")
                return events[0]
        except (EventFormatError, json_format.ParseError, ValueError, TypeError) as exc:
            raise HarnessError("malformed", f"harness answer for {turn_id} is not a valid turn: {exc}") from None
        raise HarnessError("malformed", f"harness answer for {turn_id} has neither 'event' nor 'otlp'")


# -- the one release path ------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceRow:
    """One evaluation contribution: a privacy unit's measures in one labelled slice."""

    row_id: str
    session_id: str
    user_id: str | None
    intent: str | None
    label: str
    measures: frozenset[str]
    timestamp: float


def missing_labels(collector: Any, labels: set[str]) -> set[str]:
    """Which of ``labels`` the collector's schema does not list (after one refresh from the server)."""

    def lacking() -> set[str]:
        try:
            domain = set(collector.schema.dimension("artifact_version").values)
        except KeyError:
            return set(labels)
        return labels - domain

    if lacking() and collector.has_server:
        collector.refresh_schema()
    return lacking()


class _Precomputed:
    """Stands in for the taxonomy in a WindowBook: the rows were classified already."""

    def __init__(self, rows: Mapping[str, SliceRow]) -> None:
        self._rows = rows

    def classify(self, event: DecisionEvent) -> frozenset[str]:
        return self._rows[event.event_id or ""].measures


def release_slices(collector: Any, rows: Sequence[SliceRow]) -> RecordResult:
    """Hand evaluation results to the collector's window release path (see the module docstring).

    The rows become contributions of the window their timestamp falls in,
    keyed by their privacy unit under the collector's own unit key; the
    window's sealing (bounding, DP noise, ledger, secure aggregation) does
    the rest. Idempotent per ``row_id``.
    """
    if not rows:
        return RecordResult(0, 0)
    missing = missing_labels(collector, {r.label for r in rows})
    if missing:
        # Released under a label the schema does not list, a row would count under "other": useless as
        # evidence and mixed into live slices. Leave those rows out (the caller may retry later).
        log.warning("schema v%s lacks label(s) %s: %d evaluation row(s) not released", collector.schema.version,
                    ", ".join(sorted(missing)), sum(r.label in missing for r in rows))
        rows = [r for r in rows if r.label not in missing]
        if not rows:
            return RecordResult(0, 0)
    by_id = {r.row_id: r for r in rows}
    cfg = collector.config
    book = WindowBook(collector.store, _Precomputed(by_id), lambda: collector.schema,  # type: ignore[arg-type]
                      window_seconds=cfg.window_seconds, privacy_unit=cfg.privacy_unit)
    events = [DecisionEvent.from_fields({
        "tenant_id": collector.tenant_id, "session_id": r.session_id, "timestamp": r.timestamp,
        "user_id": r.user_id, "event_id": "eval:" + r.row_id, "intent": r.intent, "artifact_version": r.label,
    }) for r in rows]
    by_id.update({"eval:" + r.row_id: r for r in rows})
    return book.record(events)


# -- the runner ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    arm: ReplayArm
    measures: frozenset[str]
    correct: bool


@dataclass
class ReplayRun:
    """One replay of one rollout's candidate by this tenant (local, un-noised: never sent as such)."""

    rollout_id: str
    candidate_id: str
    category: str
    status: HarnessStatus
    message: str
    cases: int = 0
    results: list[CaseResult] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    released: int = 0

    def failing(self, arm: ReplayArm, measure: str) -> int:
        return sum(1 for r in self.results if r.arm == arm and measure in r.measures)

    def correct(self, arm: ReplayArm) -> int:
        return sum(1 for r in self.results if r.arm == arm and r.correct)

    def summary_lines(self) -> list[str]:
        """The operator's view: per arm, incidents of the category fixed, and every measure that moved."""
        lines = [f"replay of {self.candidate_id} (rollout {self.rollout_id}): {self.status} - {self.message}"]
        if not self.results:
            return lines
        n = self.cases
        lines.append(f"  cases: {n} (category {self.category})")
        for arm in ("stable", "candidate"):
            lines.append(f"  {arm:<9}: {self.failing(arm, self.category)}/{n} still fail {self.category}, "
                         f"{self.correct(arm)}/{n} right by the gold label")
        measures = sorted({m for r in self.results for m in r.measures} - {TURNS, "task_success", self.category})
        for m in measures:
            s, c = self.failing("stable", m), self.failing("candidate", m)
            if s != c:
                lines.append(f"  {m:<20} stable {s:>4}  candidate {c:>4}")
        return lines


def score(case: ReplayCase, event: DecisionEvent, taxonomy: Taxonomy) -> tuple[frozenset[str], bool]:
    """(measures of the replayed turn, right by the gold label); ``task_success`` follows the score."""
    measures = taxonomy.classify(event)
    failures = measures - NOT_FAILURES
    expected = set(case.gold.get("expected_tools", ()))
    called = {c.name for c in event.tool_calls}
    correct = not (failures & set(case.categories)) and expected <= called and event.outcome != "failure"
    measures = (measures - {"task_success"}) | ({"task_success"} if correct else frozenset())
    return frozenset(measures), correct


def bundle_artifacts(bundle: VerifiedBundle) -> tuple[list[ArtifactContent], list[ArtifactContent]]:
    """(stable, candidate) contents of the candidate's artifact names in ``bundle``."""
    cand = bundle.candidate
    if cand is None:
        return [], []
    stable, candidate = [], []
    for name in sorted(cand.artifacts):
        candidate.append(ArtifactContent(name, cand.label, bundle.content(cand, name)))
        for approved in reversed(bundle.stable):
            if name in approved.artifacts:
                stable.append(ArtifactContent(name, approved.label, bundle.content(approved, name)))
                break
        else:
            stable.append(ArtifactContent(name, "baseline", b""))
    return stable, candidate


class ReplayRunner:
    """Runs one rollout's replay for one tenant and releases its results through :func:`release_slices`."""

    def __init__(self, collector: Any, replay_set: ReplaySet, harness: HarnessClient | None, *,
                 clock: Clock | None = None, max_cases: int = 500,
                 deadline_seconds: float = 120.0) -> None:
        self.collector = collector
        self.replay_set = replay_set
        self.harness = harness
        self.clock: Clock = clock or collector.clock
        self.max_cases = max_cases
        self.deadline = deadline_seconds

    def run(self, rollout_id: str, candidate_id: str, category: str, stable: Sequence[ArtifactContent],
            candidate: Sequence[ArtifactContent], *, intents: Sequence[str] = (), release: bool = True) -> ReplayRun:
        run = ReplayRun(rollout_id, candidate_id, category, "ok", "")
        if self.harness is None:
            run.status, run.message = "missing", "no agent harness configured (set replay.harness_url)"
            return run
        labels = {replay_label(rollout_id, "stable"), replay_label(rollout_id, "candidate")}
        if release and missing_labels(self.collector, labels):
            run.status = "not_ready"
            run.message = "the cohort's signal schema does not list this rollout's replay labels yet; retried later"
            return run
        if release:  # a case is replayed (and released) once per rollout; later calls take the new ones
            cases = self.replay_set.unreplayed(rollout_id, category, intents)[: self.max_cases]
        else:
            cases = self.replay_set.cases(category, intents)[: self.max_cases]
        if not cases:
            run.status = "no_cases"
            run.message = f"the replay set holds no {category} case{' not replayed yet' if release else ''}"
            return run
        taxonomy = self.collector.taxonomy
        started = time.monotonic()
        rows: list[SliceRow] = []
        now = to_unix(self.clock())
        for case in cases:
            if time.monotonic() - started > self.deadline:
                run.errors["slow"] += 1
                break
            pair: list[CaseResult] = []
            for arm, artifacts in (("stable", stable), ("candidate", candidate)):
                turn_id = f"{rollout_id}:{case.case_id}:{arm}"
                try:
                    event = self.harness.replay(case, arm, turn_id, artifacts)  # type: ignore[arg-type]
                except HarnessError as exc:
                    run.errors[exc.status] += 1
                    log.warning("replay %s: %s", turn_id, exc)
                    break
                measures, correct = score(case, event, taxonomy)
                pair.append(CaseResult(case.case_id, arm, measures, correct))  # type: ignore[arg-type]
            if len(pair) != 2:  # a case counts only with both arms (the arms replay the same cases)
                continue
            run.results.extend(pair)
            for r in pair:
                rows.append(SliceRow(f"{rollout_id}:{r.case_id}:{r.arm}", case.session_id, case.user_id, case.intent,
                                     replay_label(rollout_id, r.arm), r.measures | {TURNS}, now))
        run.cases = len(run.results) // 2
        if run.errors and not run.results:
            status = run.errors.most_common(1)[0][0]
            run.status = status  # type: ignore[assignment]
            run.message = f"every harness call failed ({dict(run.errors)})"
            return run
        run.message = f"{run.cases} case(s) replayed" + (f"; harness errors {dict(run.errors)}" if run.errors else "")
        if run.errors:
            run.status = run.errors.most_common(1)[0][0]  # type: ignore[assignment]
        if release:
            run.released = release_slices(self.collector, rows).recorded
            self.replay_set.mark_replayed(rollout_id, {r.case_id for r in run.results})
        return run


def replay_active_bundle(collector: Any, runner: ReplayRunner) -> ReplayRun | None:
    """Replay the active bundle's candidate while it is in its replay phase (None otherwise).

    Call it as often as convenient (each window, say): every call replays the
    cases captured since the previous one, so the replay evidence keeps
    growing until the server's replay gate decides.
    """
    bundle = collector.resolver.active()
    if bundle is None or bundle.candidate is None or bundle.exposure is None:
        return None
    exposure = bundle.exposure
    if exposure.phase != "replay" or not exposure.participates(collector.tenant_id):
        return None
    stable, candidate = bundle_artifacts(bundle)
    return runner.run(exposure.rollout_id, bundle.candidate.candidate_id, bundle.candidate.category, stable,
                      candidate, intents=sorted(exposure.intents))


def replay_in_background(collector: Any, runner: ReplayRunner,
                         on_done: Callable[[ReplayRun | None], None] | None = None) -> threading.Thread:
    """:func:`replay_active_bundle` in a daemon thread: a slow harness never holds the collector's loop."""

    def work() -> None:
        try:
            result = replay_active_bundle(collector, runner)
        except Exception:  # the replay must never take the collector down; the operator sees the log
            log.exception("replay failed")
            result = None
        if on_done is not None:
            on_done(result)

    t = threading.Thread(target=work, name="fedsignal-replay", daemon=True)
    t.start()
    return t
