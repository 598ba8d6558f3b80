"""The demo's agent simulator: reproducible draws, a shadow twin that replays its live turn's draws."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fedsignal_cli.simulator import AgentNetwork, BehaviourRates, Hotspot, SessionArtifacts, SimTenant

TENANT = SimTenant("t1", "retail", 3000)
WEIGHTS = (1.0, 12.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def network(**kwargs: object) -> AgentNetwork:
    return AgentNetwork([TENANT], seed=7, hotspot=Hotspot(cohort="retail", intent="refund"),
                        intent_weights=WEIGHTS, **kwargs)  # type: ignore[arg-type]


def test_the_same_seed_draws_the_same_window_and_another_seed_does_not() -> None:
    a = network().window_events(TENANT, 1_700_000_000, 3600)
    assert a == network().window_events(TENANT, 1_700_000_000, 3600)
    assert a != AgentNetwork([TENANT], seed=8, intent_weights=WEIGHTS).window_events(TENANT, 1_700_000_000, 3600)


def test_intents_follow_the_weights() -> None:
    events = network(max_turns_per_session=1).window_events(TENANT, 1_700_000_000, 3600)
    counts = Counter(e.intent for e in events)
    share = counts["refund"] / len(events)
    # 12/18 of the sessions; 3,000 sessions put 4.6 standard deviations at about 0.04.
    assert abs(share - 12 / 18) < 0.04
    assert len(counts) == len(WEIGHTS)


def test_outcomes_follow_the_rates() -> None:
    rates = BehaviourRates(tool_error=0.5, missing_context=0.25, user_reask=0.1)
    events = AgentNetwork([TENANT], seed=3, rates=rates).window_events(TENANT, 1_700_000_000, 3600)
    n = len(events)
    for observed, rate in [(sum(e.tool_calls[0].error == "http_500" or e.timed_out for e in events) / n, 0.5 + 0.5 * 0.03),
                           (sum(e.retrieval_empty for e in events) / n, 0.25),
                           (sum(e.user_reasked for e in events) / n, 0.1)]:
        assert abs(observed - rate) < 5 * np.sqrt(rate * (1 - rate) / n)


def test_a_shadow_twin_with_the_live_artifacts_has_the_live_outcomes() -> None:
    """The twin replays its live turn's draws: with the same rates it is the same turn."""
    same = lambda _sid, _intent: SessionArtifacts("baseline", (), "cand", ())  # noqa: E731
    events = network().session_events(TENANT, 1_700_000_000, 3600, same)
    live = {e.event_id: e for e in events if e.mode != "shadow"}
    twins = [e for e in events if e.mode == "shadow"]
    assert twins and len(twins) == len(live)
    for twin in twins:
        turn = live[twin.shadow_of or ""]
        assert (twin.tool_calls, twin.outcome, twin.evaluations, twin.latency_ms, twin.retrieval_ids) == (
            turn.tool_calls, turn.outcome, turn.evaluations, turn.latency_ms, turn.retrieval_ids)


def test_a_shadow_twin_differs_only_where_the_candidate_changes_the_odds() -> None:
    fix = {"kind": "routing_rule", "intent": "refund"}
    candidate = lambda _sid, intent: SessionArtifacts("baseline", (), "cand", (fix,))  # noqa: E731
    events = network().session_events(TENANT, 1_700_000_000, 3600, candidate)
    live = {e.event_id: e for e in events if e.mode != "shadow"}
    refund = [(live[e.shadow_of or ""], e) for e in events if e.mode == "shadow" and e.intent == "refund"]
    wrong = lambda e: e.tool_calls[0].name != e.tool_calls[0].expected  # noqa: E731
    assert sum(map(wrong, (t for _l, t in refund))) < sum(map(wrong, (lv for lv, _t in refund)))
    # Every other draw is shared: the twin's other outcomes are the live turn's.
    assert all((lv.timed_out, lv.retrieval_empty, lv.latency_ms) == (t.timed_out, t.retrieval_empty, t.latency_ms)
               for lv, t in refund)
