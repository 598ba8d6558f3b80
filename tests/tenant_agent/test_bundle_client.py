"""The tenant bundle client over real gRPC: install, refuse attacks, follow rotations, crash-safe install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fedsignal.v1 import bundles_pb2, bundles_pb2_grpc
from securesystemslib.signer import CryptoSigner

from aggregation.bundle import RolloutExposure
from aggregation.bundle_errors import (
    ExpiredMetadataError,
    InsufficientSignaturesError,
    RollbackError,
    TamperedArtifactError,
    WrongCohortError,
)
from aggregation.rollout_plan import session_in_canary
from tenant_agent.bundles import BundleClient, Resolver
from tenant_agent.bundles.store import INSTALL_STEPS
from tests.bundle_factory import NOW, World


class FakeBundleService(bundles_pb2_grpc.BundleServiceServicer):
    """Serves whatever the test puts in ``response`` (a man in the middle, or a compromised server)."""

    def __init__(self) -> None:
        self.response = bundles_pb2.GetBundleResponse(up_to_date=True)
        self.requests: list[bundles_pb2.GetBundleRequest] = []
        self.reports: list[bundles_pb2.ReportStatusRequest] = []

    def serve(self, data: bytes, artifacts: dict[str, bytes], roots: list[bytes] | None = None) -> None:
        self.response = bundles_pb2.GetBundleResponse(
            bundle_metadata=data, root_chain=roots or [],
            artifacts=[bundles_pb2.Artifact(name=n, content=c) for n, c in artifacts.items()],
        )

    def GetBundle(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.requests.append(request)
        return self.response

    def ReportStatus(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self.reports.append(request)
        return bundles_pb2.ReportStatusResponse()


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    service = FakeBundleService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    bundles_pb2_grpc.add_BundleServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, channel
    channel.close()
    server.stop(None)


@pytest.fixture
def world() -> World:
    return World()


def _client(world: World, channel: grpc.Channel, state_dir: Path, **kw) -> BundleClient:  # type: ignore[no-untyped-def]
    root_file = state_dir / "trust" / "root.json"
    if not root_file.exists():
        root_file.parent.mkdir(parents=True)
        root_file.write_bytes(world.make_root())
    return BundleClient(channel, state_dir, "t1", "c1", lambda: NOW, **kw)


ROUTE = "routing.billing"


def _arts(tool: str) -> list[tuple[str, str, bytes]]:
    return [(ROUTE, "routing_rule", f'{{"tool":"{tool}"}}'.encode())]


def test_install_then_steady_state_then_rollout_then_signed_rollback(world: World, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, channel = fake
    client = _client(world, channel, tmp_path)
    resolver = Resolver(tmp_path, "t1", clock=lambda: NOW)
    assert resolver.resolve(ROUTE, "s1").version == "baseline"

    stable = world.approval("cand-a", artifacts=_arts("a"))
    service.serve(*world.bundle(1, [stable]))
    assert client.pull().status == "installed"
    r = resolver.resolve(ROUTE, "s1")
    assert (r.version, r.content, r.arm) == ("cand-a", b'{"tool":"a"}', "stable")

    service.response = bundles_pb2.GetBundleResponse(up_to_date=True)
    assert client.pull().status == "up_to_date"
    assert service.requests[-1].installed_version == 1 and service.requests[-1].root_version == 1

    cand = world.approval("cand-b", risk="high", artifacts=_arts("b"))
    service.serve(*world.bundle(2, [stable], cand, rollout=RolloutExposure("r1", "cand-b", 1, 5.0, 0.5, ["t1"])))
    result = client.pull()
    assert (result.status, result.active_version, result.previous_version) == ("installed", 2, 1)
    sessions = [f"s{i}" for i in range(200)]
    arms = {s: resolver.resolve(ROUTE, s) for s in sessions}
    for s, res in arms.items():
        in_canary = session_in_canary("r1", s, 0.5)
        assert res.arm == ("candidate" if in_canary else "control")
        # The control of a participating tenant: stable content under the rollout's control label.
        assert res.version == ("cand-b" if in_canary else "control-r1")
        assert res.content == (b'{"tool":"b"}' if in_canary else b'{"tool":"a"}')
        assert resolver.resolve(ROUTE, s) == res  # sticky
    assert 60 < sum(r.arm == "candidate" for r in arms.values()) < 140
    outsider = Resolver(tmp_path, "t9", clock=lambda: NOW)  # same bundle, a tenant that does not take part
    assert all(outsider.resolve(ROUTE, s).arm == "stable" for s in sessions)  # not in the rollout: not evidence
    assert all(outsider.resolve(ROUTE, s).version == "cand-a" for s in sessions)

    service.serve(*world.bundle(3, [stable]))  # rollback: newer version, older approved content
    assert client.pull().active_version == 3
    assert all(resolver.resolve(ROUTE, s).version == "cand-a" for s in sessions[:20])
    assert (tmp_path / "bundles" / "previous").resolve().name == "2"
    assert [r.active_version for r in service.reports] == [1, 2, 3] and all(r.healthy for r in service.reports)


@pytest.mark.parametrize("attack", ["tampered", "rollback", "expired", "wrong_cohort", "threshold"])
def test_refused_bundle_keeps_previous_active_and_reports_unhealthy(  # type: ignore[no-untyped-def]
    world: World, fake, tmp_path: Path, attack: str
) -> None:
    service, channel = fake
    client = _client(world, channel, tmp_path)
    stable = world.approval("cand-a", artifacts=_arts("a"))
    service.serve(*world.bundle(5, [stable]))
    client.pull()
    if attack == "tampered":
        data, arts = world.bundle(6, [world.approval("cand-b", artifacts=_arts("b"))])
        arts["cand-b/" + ROUTE] = b'{"tool":"X"}'
        error: type[Exception] = TamperedArtifactError
    elif attack == "rollback":
        data, arts = world.bundle(4, [world.approval("cand-b", artifacts=_arts("b"))])
        error = RollbackError
    elif attack == "expired":
        from datetime import timedelta

        data, arts = world.bundle(6, [stable], now=NOW - timedelta(days=10))
        error = ExpiredMetadataError
    elif attack == "wrong_cohort":
        data, arts = world.bundle(6, [world.approval("cand-z", cohort="c2")], cohort="c2")
        error = WrongCohortError
    else:
        data, arts = world.bundle(6, [world.approval("cand-c", risk="critical", signers=world.reviewers[:2])])
        error = InsufficientSignaturesError
    service.serve(data, arts)
    with pytest.raises(error):
        client.pull()
    resolved = Resolver(tmp_path, "t1", clock=lambda: NOW).resolve(ROUTE, "s1")
    assert (resolved.version, resolved.content) == ("cand-a", b'{"tool":"a"}')
    assert client.store.active_version() == 5
    assert not service.reports[-1].healthy and service.reports[-1].detail == error.code  # type: ignore[attr-defined]


def test_client_follows_root_rotation_and_persists_it(world: World, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, channel = fake
    client = _client(world, channel, tmp_path)
    newcomers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    v2 = world.make_root(version=2, reviewers=newcomers, sign_with=[*world.reviewers[:3], *newcomers[:3]])
    world.reviewers = newcomers
    service.serve(*world.bundle(1, [world.approval("cand-n", artifacts=_arts("n"))]), roots=[v2])
    assert client.pull().root_version == 2
    restarted = _client(world, channel, tmp_path)  # reads the persisted root v2
    service.response = bundles_pb2.GetBundleResponse(up_to_date=True)
    assert restarted.pull().root_version == 2


@pytest.mark.parametrize("step", INSTALL_STEPS[:-1])
def test_crash_between_install_steps_leaves_previous_bundle_active(  # type: ignore[no-untyped-def]
    world: World, fake, tmp_path: Path, step: str
) -> None:
    service, channel = fake
    _client(world, channel, tmp_path)
    service.serve(*world.bundle(1, [world.approval("cand-a", artifacts=_arts("a"))]))
    _client(world, channel, tmp_path).pull()

    def crash(at: str) -> None:
        if at == step:
            raise OSError(f"simulated crash after {at}")

    service.serve(*world.bundle(2, [world.approval("cand-b", artifacts=_arts("b"))]))
    with pytest.raises(OSError, match="simulated crash"):
        _client(world, channel, tmp_path, fault=crash).pull()
    assert Resolver(tmp_path, "t1", clock=lambda: NOW).resolve(ROUTE, "s").version == "cand-a"
    # The next (restarted) client completes the install.
    assert _client(world, channel, tmp_path).pull().active_version == 2
    assert Resolver(tmp_path, "t1", clock=lambda: NOW).resolve(ROUTE, "s").version == "cand-b"


def test_process_killed_mid_install_leaves_previous_bundle_active(world: World, tmp_path: Path) -> None:
    """A real crash: the installing process dies (os._exit) right after the new version dir is in place."""
    from aggregation.bundle import TrustedBundleState
    from tenant_agent.bundles.store import BundleStore

    state = TrustedBundleState(world.make_root(), "c1")
    BundleStore(tmp_path).install(state.update_bundle(*world.bundle(1, [world.approval("cand-a", artifacts=_arts("a"))]), NOW))
    data, arts = world.bundle(2, [world.approval("cand-b", artifacts=_arts("b"))])
    (tmp_path / "new.json").write_bytes(data)
    (tmp_path / "art.bin").write_bytes(arts["cand-b/" + ROUTE])
    (tmp_path / "root.json").write_bytes(world.make_root())
    script = textwrap.dedent(f"""
        import os, sys
        from datetime import datetime
        from pathlib import Path
        from aggregation.bundle import TrustedBundleState
        from tenant_agent.bundles.store import BundleStore
        d = Path({str(tmp_path)!r})
        st = TrustedBundleState((d / "root.json").read_bytes(), "c1")
        b = st.update_bundle((d / "new.json").read_bytes(), {{"cand-b/{ROUTE}": (d / "art.bin").read_bytes()}},
                             datetime.fromisoformat({NOW.isoformat()!r}))
        def die(step):
            if step == "previous_linked":
                os._exit(9)
        BundleStore(d, die).install(b)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()
    assert (tmp_path / "bundles" / "versions" / "2").is_dir()  # the new version was written ...
    assert BundleStore(tmp_path).active_version() == 1  # ... but never became active
    assert Resolver(tmp_path, "t1", clock=lambda: NOW).resolve(ROUTE, "s").version == "cand-a"
