"""What ``fedsignal demo`` prints, and the summary it returns."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fedsignal.v1 import admin_pb2


@dataclass
class DemoSummary:
    tenants: int
    cohorts: int
    events: int
    windows: int
    rho_per_tenant: dict[str, float]
    epsilon_per_tenant: dict[str, float]
    delta: float
    hotspot: dict[str, Any] | None
    candidate_id: str | None
    bundle_signed: bool
    rollout: dict[str, Any] | None
    bundle_version_per_tenant: dict[str, int]
    # Per tenant, per rollout window: sessions that resolved the candidate.
    candidate_sessions_per_window: dict[str, list[int]]
    first_stage_canaries: list[str]
    audit_entries: int
    audit_ok: bool
    seconds: float
    # Per tenant, per rollout window: sessions that ran the candidate in shadow (never served it).
    shadow_sessions_per_window: dict[str, list[int]] = field(default_factory=dict)
    # Per tenant: its replays (status, cases, own-category failures with stable / candidate), local only.
    replays: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Printer:
    """Numbered steps and indented lines, through any ``out`` callable."""

    def __init__(self, out: Callable[[str], None], total_steps: int) -> None:
        self.out = out
        self.total = total_steps
        self.current = 0

    def step(self, title: str) -> None:
        self.current += 1
        self.out(f"\n[{self.current}/{self.total}] {title}")

    def line(self, text: str = "") -> None:
        self.out(f"      {text}" if text else "")


def signals_table(cells: Iterable[admin_pb2.MergedCell], p: Printer) -> None:
    p.line(f"{'cohort':<7} {'window':<16} {'measure':<17} {'intent':<13} {'version':<9} "
           f"{'rate':>6}  {'95% interval':<15} tenants")
    for cell in cells:
        when = datetime.fromtimestamp(cell.window_start, UTC).strftime("%m-%d %H:%M")
        p.line(f"{cell.cohort:<7} {when:<16} {cell.measure:<17} {cell.slice.get('intent', ''):<13} "
               f"{cell.slice.get('artifact_version', ''):<9} {cell.rate:>6.3f}  "
               f"[{cell.rate_low:.3f}, {cell.rate_high:.3f}]  {cell.tenants}")


def arm_rates(cells: Iterable[admin_pb2.MergedCell], measure: str, intent: str) -> str:
    """``measure``'s rate for ``intent`` per artifact version in the last window: canary vs stable."""
    # Slices whose interval is all of [0, 1] had no traffic (e.g. the stable label once every
    # tenant takes part and labels its control sessions with the rollout's control label).
    chosen = [c for c in cells if c.measure == measure and c.slice.get("intent") == intent and not c.suppressed
              and c.slice.get("artifact_version") != "other" and c.rate_high - c.rate_low < 0.999]
    if not chosen:
        return "n/a"
    last = max(c.window_start for c in chosen)
    return ", ".join(f"{c.slice.get('artifact_version')} {c.rate:.3f} [{c.rate_low:.3f}, {c.rate_high:.3f}]"
                     for c in sorted(chosen, key=lambda c: c.slice.get("artifact_version", ""))
                     if c.window_start == last)


def evidence_line(evidence: Mapping[str, Any]) -> str:
    cells = evidence.get("cells") or []
    if cells:
        c = cells[0]
        rate, low, high = c.get("rate"), c.get("rate_low"), c.get("rate_high")
        if rate is not None and low is not None and high is not None:
            return (f"rate {rate:.3f} [{low:.3f}, {high:.3f}] from {c.get('tenants', '?')} tenants, "
                    f"rule {evidence.get('rule', '?')}")
    return json.dumps(evidence)[:120]


def print_summary(s: DemoSummary, p: Printer) -> None:
    p.out("\nSummary")
    p.line(f"tenants {s.tenants} in {s.cohorts} cohorts, {s.events:,} agent turns over {s.windows} windows")
    eps = ", ".join(f"{t} rho {s.rho_per_tenant[t]:.2f} (eps {s.epsilon_per_tenant[t]:.2f})" for t in s.rho_per_tenant)
    p.line(f"privacy spent per tenant at delta={s.delta:g}: {eps}")
    if s.hotspot:
        p.line(f"hotspot found: {s.hotspot['category']} in cohort {s.hotspot['cohort']} "
               f"-> candidate {s.candidate_id} ({s.hotspot['artifact']})")
    else:
        p.line("hotspot: not found")
    p.line(f"bundle signed by reviewer threshold: {'yes' if s.bundle_signed else 'no'}")
    if s.rollout:
        r = s.rollout
        path = " -> ".join(r.get("stages_run", []))
        if r["state"] == "promoted":
            where = (f"promoted: from stage {r['stage_index'] + 1} ({r['stage_percent']:g} %) into the 100 % stage "
                     "(the candidate is the cohort's stable version now)")
        elif r["state"] == "rolled_back" and r.get("phase") != "live":
            where = f"rolled back in its {r.get('phase')} stage, before any user was served the candidate"
        elif r["state"] == "rolled_back":
            where = f"rolled back at stage {r['stage_index'] + 1} ({r['stage_percent']:g} %)"
        else:
            where = f"{r['state']} in its {r.get('phase')} stage"
        p.line(f"rollout {r['rollout_id']}: {where}; stages run: {path}")
    versions = ", ".join(f"{t} v{v} ({sum(s.candidate_sessions_per_window[t])} canary, "
                         f"{sum(s.shadow_sessions_per_window.get(t, []))} shadow sessions)"
                         for t, v in s.bundle_version_per_tenant.items())
    p.line(f"bundle version per tenant: {versions}")
    p.line(f"audit log: {s.audit_entries} entries, hash chain {'verified' if s.audit_ok else 'BROKEN'}")
    p.line(f"wall time {s.seconds:.1f} s")
