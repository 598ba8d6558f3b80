"""A server context with a trust root and reviewers, for server-side bundle tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner

from server.context import ServerContext, ServerSettings
from server.db import transaction
from server.migrate import init_db
from server.review.models import CandidateRecord
from server.review.trust_root import bootstrap_root, current_root
from server.review.workflow import approve_candidate, create_candidate

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class ServerWorld:
    ctx: ServerContext
    clock: FakeClock
    reviewers: list[CryptoSigner]

    @classmethod
    def create(cls, database_url: str, state_dir: Path) -> ServerWorld:
        clock = FakeClock()
        ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=state_dir), clock=clock)
        init_db(ctx.engine)
        reviewers = [CryptoSigner.generate_ed25519() for _ in range(3)]
        with transaction(ctx.sessions) as s:
            bootstrap_root(s, state_dir=state_dir, reviewers=reviewers, now=clock(), root_threshold=3)
        return cls(ctx, clock, reviewers)

    def propose(self, cohort: str = "c1", risk: str = "low", name: str = "routing_rule.billing",
                content: bytes = b'{"kind":"routing_rule","intent":"billing","tool":"invoice_lookup"}',
                key: str | None = None) -> str:
        with transaction(self.ctx.sessions) as s:
            rec = create_candidate(
                s, cohort=cohort, category="wrong_tool", kind="routing_rule", risk_class=risk,
                artifacts=[(name, "routing_rule", content)], evidence={"rule": "test"}, rollout_plan_json="{}",
                dedupe_key=key or f"{cohort}|{name}|{content.hex()[:16]}|{risk}", now=self.clock(),
            )
            assert rec is not None
            return rec.id

    def sign(self, candidate_id: str, reviewer: int) -> CandidateRecord:
        with transaction(self.ctx.sessions) as s:
            rec = s.get(CandidateRecord, candidate_id)
            assert rec is not None
            payload = rec.signing_payload.encode()
            sig = self.reviewers[reviewer].sign(payload)
            return approve_candidate(s, candidate_id, keyid=sig.keyid, signature=bytes.fromhex(sig.signature),
                                     signing_payload=payload, root=current_root(s), actor=f"admin:r{reviewer}",
                                     now=self.clock())

    def on_replicas(self, work: Callable[[ServerContext], None], replicas: int = 2) -> None:
        """Run ``work`` at once on ``replicas`` server contexts over this store (threads released together);
        fails with the first error any of them raised."""
        contexts = [ServerContext.create(self.ctx.settings, clock=self.clock) for _ in range(replicas)]
        barrier = threading.Barrier(replicas)
        errors: list[BaseException] = []

        def run(ctx: ServerContext) -> None:
            try:
                barrier.wait(timeout=30)
                work(ctx)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in contexts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for c in contexts:
            c.engine.dispose()
        assert errors == []

    def approved(self, cohort: str = "c1", risk: str = "low", **kw: object) -> str:
        cid = self.propose(cohort, risk, **kw)  # type: ignore[arg-type]
        for i in range({"low": 1, "high": 2, "critical": 3}[risk]):
            self.sign(cid, i)
        return cid
