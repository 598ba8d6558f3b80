"""The server core: typed settings, the one error table, context-held dependencies, guarded modes."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from aggregation import errors
from aggregation.clock import FakeClock
from aggregation.typed import DataFileError
from fedsignal_cli.main import build_parser, main
from server.app import InsecureDevRefused, build_server, check_insecure_dev
from server.context import ONLINE_KEY_FILE, RevocationCache, ServerContext, ServerSettings
from server.observability import ServerMetrics
from server.servicer import STATUS, RateLimiter, check_text, status_for
from server.signals.refusals import ReportTooLarge, WindowOutOfRange


def test_settings_refuse_unknown_keys_and_wrong_types_naming_the_key() -> None:
    with pytest.raises(DataFileError) as err:
        ServerSettings.parse({"min_tenant": 3}, source="server.toml")
    assert "min_tenant" in str(err.value) and "min_tenants" in str(err.value)  # did you mean
    with pytest.raises(DataFileError) as err:
        ServerSettings.parse({"insecure_dev": "false"}, source="server.toml")
    assert "insecure_dev" in str(err.value)
    with pytest.raises(DataFileError):
        ServerSettings.parse({"min_tenants": "5"}, source="server.toml")
    with pytest.raises(DataFileError):
        ServerSettings.parse({"min_tenants": 0}, source="server.toml")


def test_settings_defaults_are_written_once_and_a_parsed_document_overrides_them() -> None:
    parsed = ServerSettings.parse({"state_dir": "/srv/fs", "min_tenants": 7}, source="cli")
    assert parsed.state_dir == Path("/srv/fs") and parsed.min_tenants == 7
    assert parsed.listen == ServerSettings().listen and parsed.max_message_bytes == 4 * 1024 * 1024
    with pytest.raises(ValueError):
        ServerSettings().with_changes(max_message_bytes="big")


@pytest.mark.parametrize(("kind", "code"), STATUS)
def test_every_kind_of_domain_error_has_one_status(kind: type[errors.FedsignalError], code: grpc.StatusCode) -> None:
    assert status_for(kind("x")) == code


def test_status_is_the_nearest_kind_and_bugs_are_internal() -> None:
    assert status_for(ReportTooLarge("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(WindowOutOfRange("x")) == grpc.StatusCode.OUT_OF_RANGE
    assert status_for(errors.FedsignalError("no kind")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(KeyError("bug")) == grpc.StatusCode.INTERNAL
    assert not any(hasattr(kind, "status") for kind, _ in STATUS)


def test_check_text_refuses_nul_control_characters_and_length() -> None:
    assert check_text("fedsignal-collector/1.2", "v", max_chars=40) == "fedsignal-collector/1.2"
    for bad in ("a\x00b", "line\nbreak", "esc\x1b[0m", "x" * 41):
        with pytest.raises(errors.InvalidRequest):
            check_text(bad, "v", max_chars=40)


def test_rate_limiter_follows_the_injected_clock() -> None:
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    limiter = RateLimiter(clock, 3, timedelta(minutes=1))
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock.advance(61)
    assert limiter.allow("a")


def test_revocation_cache_expires_on_its_clock_not_on_sleep() -> None:
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    cache = RevocationCache(clock, timedelta(seconds=2))
    cache.put("serial-1", None)
    assert cache.get("serial-1") == (True, None)
    clock.advance(1.9)
    assert cache.get("serial-1") == (True, None)
    clock.advance(0.2)
    assert cache.get("serial-1") == (False, None)
    cache.put("serial-2", "revoked")
    cache.clear()
    assert cache.get("serial-2") == (False, None)


def test_online_key_is_created_with_the_context_not_at_first_bundle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ctx = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", state_dir=state))
    try:
        key_file = state / ONLINE_KEY_FILE
        assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
        again = ServerContext.create(ctx.settings)
        assert again.online_signer.public_key.keyid == ctx.online_signer.public_key.keyid
        again.engine.dispose()
    finally:
        ctx.engine.dispose()


def test_server_init_writes_the_online_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = ["--state-dir", str(state), "--database-url", f"sqlite:///{tmp_path / 'server.db'}"]
    assert main(["server", "init", *store, "--admin-out", str(tmp_path / "admin")]) == 0
    assert (state / ONLINE_KEY_FILE).exists()


def test_two_contexts_never_share_metrics(tmp_path: Path) -> None:
    a = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", state_dir=tmp_path / "a"))
    b = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 'b.db'}", state_dir=tmp_path / "b"))
    a.metrics.report_outcome("accepted")
    assert b"accepted" in generate_latest(a.metrics.registry)
    assert b'reason="accepted"' not in generate_latest(b.metrics.registry)
    a.engine.dispose()
    b.engine.dispose()


def test_merge_lag_has_no_empty_cohort_label() -> None:
    metrics = ServerMetrics()
    metrics.set_merge_lag(12.0, "retail")
    assert b'cohort="retail"' in generate_latest(metrics.registry)
    with pytest.raises(ValueError):
        metrics.set_merge_lag(3.0, "")
    assert b'cohort=""' not in generate_latest(metrics.registry)


@pytest.mark.parametrize(
    ("listen", "url"),
    [("0.0.0.0:0", "sqlite:///x.db"), ("10.1.2.3:7443", "sqlite:///x.db"),
     ("127.0.0.1:0", "postgresql://db.internal/fedsignal")],
)
def test_insecure_dev_is_refused_off_loopback_or_off_sqlite(listen: str, url: str) -> None:
    settings = ServerSettings(database_url=url, listen=listen, insecure_dev=True)
    with pytest.raises(InsecureDevRefused) as err:
        check_insecure_dev(settings)
    assert "--insecure-dev-anywhere" in str(err.value)
    check_insecure_dev(settings.with_changes(insecure_dev_anywhere=True))  # the explicit second switch
    check_insecure_dev(settings.with_changes(insecure_dev=False))


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:0", "[::1]:0"])
def test_insecure_dev_is_allowed_on_loopback_with_sqlite(listen: str) -> None:
    check_insecure_dev(ServerSettings(database_url="sqlite:///x.db", listen=listen, insecure_dev=True))


def test_build_server_refuses_insecure_dev_on_a_public_address(tmp_path: Path) -> None:
    ctx = ServerContext.create(ServerSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", state_dir=tmp_path,
                                              listen="0.0.0.0:0", insecure_dev=True))
    try:
        with pytest.raises(InsecureDevRefused):
            build_server(ctx, jobs=False)
    finally:
        ctx.engine.dispose()


def test_serve_cli_refuses_insecure_dev_off_loopback_and_metrics_default_to_loopback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--state-dir", str(tmp_path / "state"), "--database-url", f"sqlite:///{tmp_path / 'server.db'}"]
    assert main(["server", "serve", *store, "--insecure-dev", "--listen", "0.0.0.0:0", "--no-jobs"]) == 1
    assert "loopback" in capsys.readouterr().err
    args = build_parser().parse_args(["server", "serve"])
    assert args.metrics_host == "127.0.0.1"


def test_a_sqlite_store_is_private(tmp_path: Path) -> None:
    from server.db import make_engine
    from server.migrate import init_db

    db = tmp_path / "server.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        init_db(engine)
    finally:
        engine.dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    (tmp_path / "loose.db").write_bytes(b"")
    (tmp_path / "loose.db").chmod(0o644)
    make_engine(f"sqlite:///{tmp_path / 'loose.db'}").dispose()
    assert stat.S_IMODE((tmp_path / "loose.db").stat().st_mode) == 0o600
