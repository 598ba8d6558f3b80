"""The caller's revocation verdict, as every round handler checks it (``server.identity.auth``): when one
certificate's cached verdict expires, the verdicts of the other certificates seen lately are looked up in
the same statement. Each verdict is still what the database said at most ``revocation_cache_seconds``
ago, so a revoked certificate is refused within that time, and a batch gives the verdict a lone look-up gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event, update

from aggregation.clock import FakeClock
from server.context import ServerContext, ServerSettings
from server.db import make_engine, make_sessionmaker, read_only, transaction
from server.identity import auth
from server.identity.ca import CertificateAuthority
from server.identity.enrollment import certificate_refusal
from server.identity.models import CertificateRecord, TenantRecord
from server.migrate import init_db

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Refused(Exception):
    pass


class Caller:
    """A servicer context that holds one client certificate."""

    def __init__(self, pem: bytes) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refused(code, details)


def _ctx(database_url: str, clock: FakeClock, tmp: Path) -> ServerContext:
    engine = make_engine(database_url)
    init_db(engine)
    return ServerContext(settings=ServerSettings(database_url=database_url, state_dir=tmp / "state",
                                                 revocation_cache_seconds=2.0),
                         engine=engine, sessions=make_sessionmaker(engine), clock=clock)


def _issue(ctx: ServerContext, ca: CertificateAuthority, subject: str, role: str = "tenant", *,
           days: int = 30) -> tuple[str, Caller]:
    _key, issued = ca.issue_key_and_cert(subject, "retail" if role == "tenant" else None, role, now=NOW, days=days)
    with transaction(ctx.sessions) as session:
        if role == "tenant":
            session.add(TenantRecord(tenant_id=subject, cohort="retail", created_at=NOW, enrolled_at=NOW))
            session.flush()
        session.add(CertificateRecord(serial=issued.serial, subject=subject, role=role,
                                      cohort="retail" if role == "tenant" else None, issued_at=NOW,
                                      not_after=issued.not_after))
    return issued.serial, Caller(issued.certificate_pem)


def _statements(ctx: ServerContext) -> list[str]:
    seen: list[str] = []

    @event.listens_for(ctx.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM certificates" in statement:
            seen.append(f"{statement} -- {len(parameters)} serial(s)")

    return seen


def _refusal(caller: Caller, ctx: ServerContext) -> str | None:
    try:
        auth.require(caller, ctx, "any")  # type: ignore[arg-type]
    except Refused as exc:
        return str(exc.args[1])
    return None


def test_a_certificate_revoked_is_refused_within_the_cache_period_when_refreshed_with_others(
        database_url: str, tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    ctx = _ctx(database_url, clock, tmp_path)
    ca = CertificateAuthority.create(tmp_path / "ca")
    callers = {name: _issue(ctx, ca, name) for name in ("t1", "t2", "t3")}
    looked_up = _statements(ctx)
    for _serial, caller in callers.values():
        assert _refusal(caller, ctx) is None
    assert len(looked_up) == 3  # first sight: each looked up as it arrives
    serial2, caller2 = callers["t2"]
    clock.advance(0.5)
    with transaction(ctx.sessions) as session:  # revoked on another replica: this one's cache is not cleared
        session.execute(update(CertificateRecord).where(CertificateRecord.serial == serial2)
                        .values(revoked_at=clock(), revocation_reason="lost"))
    assert _refusal(caller2, ctx) is None  # the cached verdict, for at most revocation_cache_seconds
    clock.advance(1.6)  # 2.1 s after the verdicts: t1's call refreshes every verdict past half its life
    assert _refusal(callers["t1"][1], ctx) is None
    assert len(looked_up) == 4  # one statement for the three
    assert _refusal(caller2, ctx) == f"client certificate {serial2} was revoked"
    assert _refusal(callers["t3"][1], ctx) is None
    assert len(looked_up) == 4  # both answered from that statement


@pytest.mark.parametrize("revoke_step", [1, 3, 4, 6])
def test_a_verdict_is_never_older_than_the_cache_period(revoke_step: int, database_url: str, tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    ctx = _ctx(database_url, clock, tmp_path)
    ca = CertificateAuthority.create(tmp_path / "ca")
    (serial1, caller1), (_s2, caller2), (_s3, caller3) = (_issue(ctx, ca, f"t{i}") for i in (1, 2, 3))
    revoked_at = None
    for step in range(24):  # every 0.25 s the others call (and refresh in batches); t1 every third step
        if step == revoke_step:
            revoked_at = clock()
            with transaction(ctx.sessions) as session:
                session.execute(update(CertificateRecord).where(CertificateRecord.serial == serial1)
                                .values(revoked_at=revoked_at, revocation_reason="lost"))
        assert _refusal(caller2 if step % 2 else caller3, ctx) is None
        if step % 3 == 0 or revoked_at is not None:
            verdict = _refusal(caller1, ctx)
            if revoked_at is None:
                assert verdict is None
            elif clock() >= revoked_at + timedelta(seconds=2):
                assert verdict == f"client certificate {serial1} was revoked"
        clock.advance(0.25)
    assert _refusal(caller1, ctx) == f"client certificate {serial1} was revoked"


def test_a_batch_gives_every_verdict_a_lone_look_up_gives(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    ctx = _ctx(database_url, clock, tmp_path)
    ca = CertificateAuthority.create(tmp_path / "ca")
    ok, ok_caller = _issue(ctx, ca, "ok")
    revoked, revoked_caller = _issue(ctx, ca, "revoked")
    gone, gone_caller = _issue(ctx, ca, "tenant-gone")
    expired, expired_caller = _issue(ctx, ca, "expired", days=1)
    admin, admin_caller = _issue(ctx, ca, "root", "admin")
    stranger_key, stranger = ca.issue_key_and_cert("stranger", "retail", "tenant", now=NOW)  # never recorded
    with transaction(ctx.sessions) as session:
        session.execute(update(CertificateRecord).where(CertificateRecord.serial == revoked)
                        .values(revoked_at=NOW, revocation_reason="lost"))
        session.execute(update(TenantRecord).where(TenantRecord.tenant_id == "tenant-gone")
                        .values(revoked_at=NOW, revocation_reason="left"))
    callers = [ok_caller, revoked_caller, gone_caller, expired_caller, admin_caller, Caller(stranger.certificate_pem)]
    serials = [ok, revoked, gone, expired, admin, stranger.serial]
    for caller in callers:
        _refusal(caller, ctx)  # seen
    clock.advance(timedelta(days=2))  # every verdict expired; "expired" is past its not_after now
    looked_up = _statements(ctx)
    batched = [_refusal(caller, ctx) for caller in callers]
    assert len(looked_up) == 1
    with read_only(ctx.read_sessions) as session:
        alone = [certificate_refusal(session, serial, clock()) for serial in serials]
    assert batched == alone
    assert batched[0] is None and batched[4] is None and all(v is not None for v in batched[1:4] + batched[5:])
    assert stranger_key


def test_without_a_cache_period_every_call_looks_up_its_own_certificate_only(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    ctx = _ctx(f"sqlite:///{tmp_path / 'server.db'}", clock, tmp_path)
    ctx.settings = ctx.settings.model_copy(update={"revocation_cache_seconds": 0.0})
    ctx.revocations = type(ctx.revocations)(clock, timedelta(0))
    ca = CertificateAuthority.create(tmp_path / "ca")
    callers = [_issue(ctx, ca, f"t{i}")[1] for i in range(3)]
    for caller in callers:
        assert _refusal(caller, ctx) is None
    looked_up = _statements(ctx)
    for caller in callers:
        assert _refusal(caller, ctx) is None
    assert len(looked_up) == 3 and all(s.endswith("-- 1 serial(s)") for s in looked_up)
