"""A seeded agent-network simulator: the telemetry of many tenants' agents.

Each simulated session is one or more agent turns in one intent. Agents call
tools, sometimes the wrong one, sometimes fail, escalate, get corrected; one
planted hotspot (a cohort and intent where agents pick the wrong tool far too
often) gives the loop something to find. Agents look up their artifacts for
each session through an :data:`ArtifactSource` (in the demo: the tenant's
local resolve API) and change behaviour with what they get, so a rollout's
canary and control really differ.

Artifact effects, by the artifact document's ``kind`` (and ``intent`` when
present, otherwise every intent):

* ``routing_rule`` / ``tool_policy``: wrong-tool rate back to the base rate
  (the hotspot is removed) and then halved;
* ``retrieval_rule``: missing-context rate halved;
* ``prompt_template`` / ``guardrail_template``: unsupported-claim rate halved;
  with ``"strictness": "relaxed"`` safety incidents ×20;
* ``escalation_policy``: poor-escalation rate halved;
* ``timeout_retry_policy``: timeout rate halved;
* ``simulated_effects``: ``{measure: multiplier}`` applied as given (used by
  tests to build a deliberately harmful artifact).

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed,
tenant, window), so a run is reproducible whatever order tenants run in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from aggregation.events import DecisionEvent, ToolCall

INTENT_TOOLS: dict[str, str] = {
    "billing": "invoice_lookup",
    "refund": "refund_lookup",
    "order_status": "order_lookup",
    "tech_support": "kb_search",
    "account": "account_lookup",
    "shipping": "shipment_tracker",
    "cancellation": "order_cancel",
}
INTENTS: tuple[str, ...] = tuple(INTENT_TOOLS)

#: For one session: (artifact version label, artifact documents in effect).
ArtifactSource = Callable[[str], tuple[str, Sequence[Mapping[str, Any]]]]


def no_artifacts(_session_id: str) -> tuple[str, Sequence[Mapping[str, Any]]]:
    return "baseline", ()


@dataclass(frozen=True)
class SessionArtifacts:
    """What one session's agent resolved: what it serves, and a shadow candidate to run beside it (or None)."""

    label: str
    docs: Sequence[Mapping[str, Any]]
    shadow_label: str | None = None
    shadow_docs: Sequence[Mapping[str, Any]] | None = None


#: Intent-aware resolution (per-intent rollouts, shadow mode): (session id, intent) -> what the agent uses.
SessionSource = Callable[[str, str], SessionArtifacts]


@dataclass(frozen=True)
class BehaviourRates:
    """Per-turn probabilities of the base agent."""

    wrong_tool: float = 0.03
    tool_error: float = 0.02
    timeout: float = 0.01
    missing_context: float = 0.03
    unsupported_claim: float = 0.02
    escalation: float = 0.05
    poor_escalation: float = 0.01
    human_correction: float = 0.03
    user_reask: float = 0.04
    safety_incident: float = 0.002
    policy_violation: float = 0.01
    style_mismatch: float = 0.02


@dataclass(frozen=True)
class Hotspot:
    """A planted failure pattern: agents in one intent of one cohort pick the wrong tool."""

    cohort: str
    intent: str = "refund"
    wrong_tool_rate: float = 0.35
    wrong_tool_name: str = "order_lookup"


@dataclass(frozen=True)
class SimTenant:
    tenant_id: str
    cohort: str
    sessions_per_window: int = 400


@dataclass
class AgentNetwork:
    tenants: Sequence[SimTenant]
    seed: int = 7
    hotspot: Hotspot | None = None
    rates: BehaviourRates = field(default_factory=BehaviourRates)
    max_turns_per_session: int = 2
    intent_weights: Sequence[float] | None = None

    def _rng(self, tenant: SimTenant, window_start: float) -> np.random.Generator:
        return np.random.default_rng([self.seed, _tag(tenant.tenant_id), int(window_start)])

    def _intent_cdf(self) -> np.ndarray:
        """The cumulative intent weights exactly as ``Generator.choice(p=...)`` computes them.

        ``choice`` draws one uniform double and searches this array (side ``right``); doing the
        same here draws the same intents from the same generator without ``choice``'s per-call
        validation of ``p`` (the simulator's hottest line).
        """
        weights = np.asarray(self.intent_weights or [1.0] * len(INTENTS), dtype=float)
        cdf = (weights / weights.sum()).cumsum()
        cdf /= cdf[-1]
        return cdf

    def session_events(
        self, tenant: SimTenant, window_start: float, window_seconds: int, resolve: SessionSource,
    ) -> list[DecisionEvent]:
        """Like :meth:`window_events`, resolving per (session, intent), with shadow turns where resolved.

        Each turn draws its outcomes from its own generator; its shadow twin
        (the candidate run on the same input) replays the same draws against
        the candidate's rates, so the two outcomes are as correlated as two
        runs of an agent on one input: they differ only where the artifact
        changes the odds (which is what a paired test measures).
        """
        rng = self._rng(tenant, window_start)
        cdf = self._intent_cdf()
        tag = _tag(tenant.tenant_id)
        events: list[DecisionEvent] = []
        for s in range(tenant.sessions_per_window):
            session_id = f"{tenant.tenant_id}-{int(window_start)}-{s}"
            intent = INTENTS[int(cdf.searchsorted(rng.random(), side="right"))]
            got = resolve(session_id, intent)
            rates = self._effective_rates(tenant, intent, got.docs)
            shadow_rates = (self._effective_rates(tenant, intent, got.shadow_docs)
                            if got.shadow_docs is not None else None)
            turns = int(rng.integers(1, self.max_turns_per_session + 1))
            for t in range(turns):
                ts = window_start + float(rng.uniform(0, window_seconds - 1))
                if shadow_rates is None:
                    events.append(self._turn(rng, tenant, session_id, t, intent, ts, got.label, rates))
                    continue
                # The twin replays the live turn's draws: a copy of its fresh generator's state.
                turn_bits = np.random.PCG64(np.random.SeedSequence([self.seed, tag, int(window_start), s, t]))
                twin_bits = np.random.PCG64()
                twin_bits.state = turn_bits.state
                live = self._turn(np.random.Generator(turn_bits), tenant, session_id, t, intent, ts, got.label, rates)
                events.append(live)
                if shadow_rates is not None:
                    twin = self._turn(np.random.Generator(twin_bits), tenant, session_id, t, intent, ts + 0.001,
                                      got.shadow_label or "shadow", shadow_rates)
                    events.append(replace(twin, event_id=f"{live.event_id}-shadow", mode="shadow",
                                          shadow_of=live.event_id))
        events.sort(key=lambda e: e.timestamp)
        return events

    def window_events(
        self,
        tenant: SimTenant,
        window_start: float,
        window_seconds: int,
        artifacts: ArtifactSource = no_artifacts,
    ) -> list[DecisionEvent]:
        """All decision events of one tenant in one window, timestamps inside it."""
        rng = self._rng(tenant, window_start)
        cdf = self._intent_cdf()
        events: list[DecisionEvent] = []
        for s in range(tenant.sessions_per_window):
            session_id = f"{tenant.tenant_id}-{int(window_start)}-{s}"
            intent = INTENTS[int(cdf.searchsorted(rng.random(), side="right"))]
            label, docs = artifacts(session_id)
            rates = self._effective_rates(tenant, intent, docs)
            turns = int(rng.integers(1, self.max_turns_per_session + 1))
            for t in range(turns):
                ts = window_start + float(rng.uniform(0, window_seconds - 1))
                events.append(self._turn(rng, tenant, session_id, t, intent, ts, label, rates))
        events.sort(key=lambda e: e.timestamp)
        return events

    # -- behaviour --------------------------------------------------------------
    def _effective_rates(self, tenant: SimTenant, intent: str, docs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        r = self.rates
        rates = {
            "wrong_tool": r.wrong_tool,
            "tool_error": r.tool_error,
            "timeout": r.timeout,
            "missing_context": r.missing_context,
            "unsupported_claim": r.unsupported_claim,
            "escalation": r.escalation,
            "poor_escalation": r.poor_escalation,
            "human_correction": r.human_correction,
            "user_reask": r.user_reask,
            "safety_incident": r.safety_incident,
            "policy_violation": r.policy_violation,
            "style_mismatch": r.style_mismatch,
        }
        hot = self.hotspot
        if hot is not None and hot.cohort == tenant.cohort and hot.intent == intent:
            rates["wrong_tool"] = hot.wrong_tool_rate
        for doc in docs:
            target = doc.get("intent")
            if target not in (None, intent):
                continue
            kind = doc.get("kind")
            if kind in ("routing_rule", "tool_policy"):
                rates["wrong_tool"] = r.wrong_tool * 0.5
            elif kind == "retrieval_rule":
                rates["missing_context"] *= 0.5
            elif kind in ("prompt_template", "guardrail_template"):
                rates["unsupported_claim"] *= 0.5
                if doc.get("strictness") == "relaxed":
                    rates["safety_incident"] *= 20
            elif kind == "escalation_policy":
                rates["poor_escalation"] *= 0.5
            elif kind == "timeout_retry_policy":
                rates["timeout"] *= 0.5
            for measure, factor in dict(doc.get("simulated_effects") or {}).items():
                if measure in rates:
                    rates[measure] = min(1.0, rates[measure] * float(factor))
        return rates

    def _turn(
        self,
        rng: np.random.Generator,
        tenant: SimTenant,
        session_id: str,
        turn: int,
        intent: str,
        ts: float,
        label: str,
        rates: Mapping[str, float],
    ) -> DecisionEvent:
        def hit(name: str) -> bool:
            return bool(rng.random() < rates[name])

        # The first ten outcomes in one draw: the same doubles, in the same order, as ten
        # scalar draws (the generator fills the array one next_double at a time).
        u = rng.random(len(_FIRST_OUTCOMES)).tolist()
        (wrong, tool_failed, timed_out, missing_context, unsupported, escalated, poor_escalation, safety, policy,
         style) = [x < rates[name] for x, name in zip(u, _FIRST_OUTCOMES, strict=True)]
        right_tool = INTENT_TOOLS[intent]
        if wrong:
            hot = self.hotspot
            called = hot.wrong_tool_name if hot is not None and hot.intent == intent else "web_search"
        else:
            called = right_tool
        error = "timeout" if timed_out else ("http_500" if tool_failed else None)
        failed = wrong or tool_failed or timed_out or missing_context or unsupported or safety
        evaluations: dict[str, Any] = {}
        if unsupported:
            evaluations["groundedness"] = 0.1
        if safety:
            evaluations["safety"] = "unsafe"
        if style:
            evaluations["style"] = "mismatch"
        return DecisionEvent(
            tenant_id=tenant.tenant_id,
            session_id=session_id,
            timestamp=ts,
            event_id=f"{session_id}-{turn}",
            intent=intent,
            agent="support-agent",
            model="sim-llm-1",
            tool_calls=(ToolCall(name=called, error=error, expected=right_tool),),
            retrieval_ids=() if missing_context else (f"doc-{int(rng.integers(1000))}",),
            retrieval_empty=missing_context,
            escalated=escalated,
            escalation_requested=escalated or poor_escalation,
            policy_blocked=policy,
            human_edited=hit("human_correction"),
            user_reasked=hit("user_reask"),
            outcome="failure" if failed else "success",
            error_type=error,
            timed_out=timed_out,
            latency_ms=float(rng.gamma(4.0, 300.0)),
            input_tokens=int(rng.integers(200, 2000)),
            output_tokens=int(rng.integers(50, 600)),
            evaluations=evaluations,
            artifact_version=label,
            bundle_version=label,
        )


#: The outcomes each turn draws first, in draw order (see ``AgentNetwork._turn``).
_FIRST_OUTCOMES = (
    "wrong_tool", "tool_error", "timeout", "missing_context", "unsupported_claim", "escalation",
    "poor_escalation", "safety_incident", "policy_violation", "style_mismatch",
)  # fmt: skip


@lru_cache(maxsize=256)
def _tag(tenant_id: str) -> int:
    """A tenant's 64-bit tag in the generators' seeds."""
    return int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:8], "big")


def with_sessions(tenants: Sequence[SimTenant], sessions: int) -> list[SimTenant]:
    return [replace(t, sessions_per_window=sessions) for t in tenants]


# -- the agent harness: the simulated agents replay a case on request ------------------------


def event_document(event: DecisionEvent) -> dict[str, Any]:
    """``event`` in the JSON Lines event schema (docs/event-schema.md), as a harness answers."""
    doc: dict[str, Any] = {
        "intent": event.intent, "agent": event.agent, "model": event.model, "outcome": event.outcome,
        "tool_calls": [{"name": c.name, "error": c.error, "expected": c.expected} for c in event.tool_calls],
        "retrieval_ids": list(event.retrieval_ids), "evaluations": dict(event.evaluations),
    }
    for flag in ("retrieval_empty", "escalated", "escalation_requested", "policy_blocked", "human_edited",
                 "user_reasked", "timed_out"):
        if getattr(event, flag):
            doc[flag] = True
    if event.error_type:
        doc["error_type"] = event.error_type
    return {k: v for k, v in doc.items() if v is not None}


def replay_turn(network: AgentNetwork, tenant: SimTenant, request: Mapping[str, Any]) -> dict[str, Any]:
    """Answer one harness request (docs/harness.md): the agent runs the case with the given artifacts."""
    import json as _json

    case = request["case"]
    intent = str(case.get("intent") or INTENTS[0])
    docs = []
    for art in request.get("artifacts", ()):
        text = art.get("content")
        if text:
            docs.append(_json.loads(text))
    # Seeded by the case, not the arm: both arms replay the same input with the same draws, so they differ
    # only where the artifacts change the odds (as two runs of one agent on one input would).
    seed = int.from_bytes(hashlib.sha256(str(case.get("case_id", request["turn_id"])).encode()).digest()[:8], "big")
    rng = np.random.default_rng([network.seed, seed])
    rates = network._effective_rates(tenant, intent, docs)
    event = network._turn(rng, tenant, "replay", 0, intent, 0.0, "replay", rates)
    return {"turn_id": request["turn_id"], "event": event_document(event)}


class HarnessServer:
    """A tenant's agent harness on a loopback port, backed by the simulated agents (``POST /replay``)."""

    def __init__(self, network: AgentNetwork, tenant: SimTenant, host: str = "127.0.0.1") -> None:
        import json as _json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                try:
                    doc = _json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                    body, status = _json.dumps(replay_turn(network, tenant, doc)).encode(), 200
                except (ValueError, KeyError, TypeError) as exc:
                    body, status = _json.dumps({"error": str(exc)}).encode(), 400
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                return

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sim-harness", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/replay"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
