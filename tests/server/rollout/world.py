"""A server store with a trust root, enrolled tenants and bundled candidates, on a settable clock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select

from aggregation.rollout_plan import replay_label
from server.context import ServerContext, ServerSettings
from server.db import make_engine, make_sessionmaker, transaction
from server.identity.enrollment import ensure_tenant
from server.identity.models import TenantRecord
from server.migrate import init_db
from server.review.bundles import latest_bundle
from server.review.trust_root import bootstrap_root, current_root
from server.review.workflow import approve_candidate, create_candidate, get_candidate
from server.signals.models import MergedWindow
from server.signals.schemas import current_schema

COHORT = "retail-eu"
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
WINDOW = 3600


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class RolloutWorld:
    ctx: ServerContext
    clock: Clock
    reviewer: CryptoSigner
    tenants: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, database_url: str, state_dir: Path, *, tenants: int = 5, min_tenants: int = 3) -> RolloutWorld:
        engine = make_engine(database_url)
        init_db(engine)
        clock = Clock()
        settings = ServerSettings(database_url=database_url, state_dir=state_dir, min_tenants=min_tenants,
                                  insecure_dev=True)
        ctx = ServerContext(settings=settings, engine=engine, sessions=make_sessionmaker(engine), clock=clock)
        reviewer = CryptoSigner.generate_ed25519()
        world = cls(ctx, clock, reviewer)
        with transaction(ctx.sessions) as s:
            bootstrap_root(s, state_dir=state_dir, reviewers=[reviewer], now=clock(),
                           thresholds={"low": 1, "high": 1, "critical": 1})
        with transaction(ctx.sessions) as s:  # as the server does: the root and the tenants apart (lock order)
            for i in range(tenants):
                world.enroll(s, f"tenant-{i}")
        return world

    def enroll(self, session, tenant_id: str) -> None:  # type: ignore[no-untyped-def]
        rec = ensure_tenant(session, tenant_id, COHORT, self.clock())
        rec.enrolled_at = self.clock()
        session.flush()
        self.tenants.append(tenant_id)

    def bundled_candidate(self, artifacts: list[tuple[str, str, bytes]] | None = None,
                          plan: Mapping[str, object] | None = None, key: str = "c1") -> str:
        arts = artifacts or [("routing.refund", "routing_rule", b'{"kind": "routing_rule", "intent": "refund"}')]
        with transaction(self.ctx.sessions) as s:
            rec = create_candidate(
                s, cohort=COHORT, category="wrong_tool", kind=arts[0][1], risk_class="low", artifacts=arts,
                evidence={"test": key}, rollout_plan_json=json.dumps(plan) if plan else "", dedupe_key=key,
                now=self.clock(),
            )
            assert rec is not None
            payload = rec.signing_payload.encode()
            sig = self.reviewer.sign(payload)
            approve_candidate(s, rec.id, keyid=self.reviewer.public_key.keyid, signature=bytes.fromhex(sig.signature),
                              signing_payload=payload, root=current_root(s), actor="reviewer:alice", now=self.clock())
            assert get_candidate(s, rec.id).state == "bundled"
            return rec.id

    def add_window(self, window_start: int, arms: Mapping[str, Mapping[str, float]], *,
                   variance: float = 20.0, tenants: int = 5, intent: str = "billing") -> None:
        """A merged window: ``arms[label][measure]`` counts (``turns`` included), all on ``intent``."""
        with transaction(self.ctx.sessions) as s:
            schema = current_schema(s, COHORT)
            cells = np.zeros(schema.size, dtype="<i8")
            for label, counts in arms.items():
                for measure, value in counts.items():
                    cells[schema.cell_index({"measure": measure, "intent": intent, "artifact_version": label})] = round(value)
            existing = s.scalars(select(MergedWindow).where(
                MergedWindow.cohort == COHORT, MergedWindow.window_start == window_start,
                MergedWindow.schema_version == schema.version)).first()
            if existing is not None:  # several slices of one window (e.g. replay evidence beside the canary)
                existing.cells = (np.frombuffer(existing.cells, dtype="<i8") + cells).tobytes()
                existing.variance = max(existing.variance, variance)
                existing.tenants = existing.reports = min(existing.tenants, tenants)
                existing.generation += 1
                return
            s.add(MergedWindow(cohort=COHORT, window_start=window_start, window_end=window_start + WINDOW,
                               schema_version=schema.version, cells=cells.tobytes(), variance=variance,
                               tenants=tenants, reports=tenants, generation=1, updated_at=self.clock()))

    def add_replay(self, window_start: int, rollout_id: str, stable: Mapping[str, float],
                   candidate: Mapping[str, float], *, tenants: int = 5, variance: float = 20.0,
                   intent: str = "billing") -> None:
        """Merged replay slices of a rollout (``stable``/``candidate``: counts incl. ``turns``)."""
        self.add_window(window_start, {replay_label(rollout_id, "stable"): stable,
                                       replay_label(rollout_id, "candidate"): candidate},
                        variance=variance, tenants=tenants, intent=intent)

    def latest_bundle(self):  # type: ignore[no-untyped-def]
        with transaction(self.ctx.sessions) as s:
            return latest_bundle(s, COHORT)

    def enrolled(self) -> list[str]:
        with transaction(self.ctx.sessions) as s:
            return list(s.scalars(select(TenantRecord.tenant_id).where(TenantRecord.cohort == COHORT)))


def arm(turns: float, **rates: float) -> dict[str, float]:
    """Counts of one arm: ``turns`` and ``rate * turns`` per measure."""
    return {"turns": turns, **{m: r * turns for m, r in rates.items()}}


NEUTRAL = {"task_success": 0.8, "escalated": 0.05, "human_correction": 0.03, "tool_error": 0.02, "timeout": 0.01,
           "safety_incident": 0.0}


#: Replayed cases where the candidate fixes its own category (wrong_tool) and breaks nothing.
REPLAY_STABLE = {"turns": 300, "wrong_tool": 280, "task_success": 20, "escalated": 15, "tool_error": 6}
REPLAY_FIXED = {"turns": 300, "wrong_tool": 20, "task_success": 270, "escalated": 14, "tool_error": 6}
