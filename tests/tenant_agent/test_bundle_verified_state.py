"""Installed bundles are served only from verified state; the store is private and takes a writer lock."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aggregation.bundle import TrustedBundleState, VerifiedBundle
from aggregation.bundle_errors import BundleRefused, TamperedArtifactError
from fedsignal_cli.main import main
from tenant_agent.bundles import InstalledBundleRefused, Resolver, serve_resolve
from tenant_agent.bundles.store import BundleStore
from tests.bundle_factory import NOW, World

ROUTE = "routing.billing"
REPO = Path(__file__).resolve().parents[2]


def _bundle(world: World, state: TrustedBundleState, version: int, tool: str) -> VerifiedBundle:
    approval = world.approval(f"cand-{tool}", artifacts=[(ROUTE, "routing_rule", f'{{"tool":"{tool}"}}'.encode())])
    return state.update_bundle(*world.bundle(version, [approval]), NOW)


def _artifact_file(state_dir: Path, version: int) -> Path:
    directory = state_dir / "bundles" / "versions" / str(version)
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / manifest[f"cand-{'ab'[version - 1]}/{ROUTE}"]


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def installed(tmp_path: Path) -> tuple[World, TrustedBundleState]:
    world = World()
    state = TrustedBundleState(world.make_root(), "c1")
    BundleStore(tmp_path).install(_bundle(world, state, 1, "a"))
    return world, state


def test_a_byte_changed_on_disk_is_refused_not_served(tmp_path: Path, installed: tuple[World, TrustedBundleState]
                                                      ) -> None:
    assert Resolver(tmp_path, "t1", clock=lambda: NOW).resolve(ROUTE, "s").content == b'{"tool":"a"}'
    _flip_one_byte(_artifact_file(tmp_path, 1))
    restarted = Resolver(tmp_path, "t1", clock=lambda: NOW)  # a collector restarting over the damaged install
    with pytest.raises(InstalledBundleRefused, match="does not match its signed SHA-256"):
        restarted.resolve(ROUTE, "s")
    with pytest.raises(TamperedArtifactError):
        BundleStore(tmp_path).load(tmp_path / "bundles" / "versions" / "1")


def test_the_resolve_endpoint_answers_503_for_a_damaged_install(tmp_path: Path,
                                                                installed: tuple[World, TrustedBundleState]) -> None:
    _flip_one_byte(_artifact_file(tmp_path, 1))
    server = serve_resolve(Resolver(tmp_path, "t1", clock=lambda: NOW), "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/v1/resolve?artifact={ROUTE}&session=s1"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 503
        body = json.loads(err.value.read())
        assert body["code"] == "installed_bundle_refused" and "content" not in body
    finally:
        server.close()


def test_a_damaged_new_install_keeps_the_last_verified_bundle(tmp_path: Path,
                                                              installed: tuple[World, TrustedBundleState]) -> None:
    world, state = installed
    resolver = Resolver(tmp_path, "t1", clock=lambda: NOW)
    assert resolver.resolve(ROUTE, "s").version == "cand-a"
    BundleStore(tmp_path).install(_bundle(world, state, 2, "b"))
    _flip_one_byte(_artifact_file(tmp_path, 2))  # damaged between install and the resolver's next read
    served = resolver.resolve(ROUTE, "s")
    assert (served.version, served.content) == ("cand-a", b'{"tool":"a"}')


def test_a_damaged_metadata_document_is_refused(tmp_path: Path, installed: tuple[World, TrustedBundleState]) -> None:
    metadata = tmp_path / "bundles" / "versions" / "1" / "metadata.json"
    metadata.write_bytes(metadata.read_bytes()[:-10])  # a torn or truncated metadata document
    with pytest.raises(BundleRefused):
        Resolver(tmp_path, "t1", clock=lambda: NOW).active()


def test_the_bundle_store_is_private(tmp_path: Path, installed: tuple[World, TrustedBundleState]) -> None:
    root = tmp_path / "bundles"
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from aggregation.bundle import TrustedBundleState
    from tests.bundle_factory import NOW, World
    from tenant_agent.bundles.store import BundleStore

    state_dir, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    world = World()
    state = TrustedBundleState(world.make_root(), "c1")
    store = BundleStore(state_dir)
    for version in range(first, first + 2 * count, 2):  # this process: odd versions, the other: even ones
        approval = world.approval(f"cand-{version}", artifacts=[("a", "routing_rule", b"x" * 2000)] * 1
                                  + [(f"n{i}", "routing_rule", bytes([i]) * 500) for i in range(8)])
        bundle = state.update_bundle(*world.bundle(version, [approval]), NOW)
        store.install(bundle)
    print("ok")
""")


def test_two_processes_on_one_state_dir_install_without_breaking_each_other(tmp_path: Path) -> None:
    count = 60
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(first), str(count)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for first in (1, 2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    store = BundleStore(tmp_path)
    current = store.active_dir()
    assert current is not None and current.is_dir()  # `current` never left dangling
    assert store.load(current).version == store.active_version()
    leftovers = [p.name for p in (tmp_path / "bundles").iterdir() if p.name.startswith(".staging")]
    assert leftovers == []


def test_status_says_a_damaged_install_is_not_served(tmp_path: Path, installed: tuple[World, TrustedBundleState],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "collector.toml").write_text('state_dir = "."\ntenant_id = "t1"\ncohort = "c1"\n')
    config = str(tmp_path / "collector.toml")
    assert main(["agent", "status", "--config", config]) == 0
    assert "bundle:   version 1" in capsys.readouterr().out
    _flip_one_byte(_artifact_file(tmp_path, 1))
    assert main(["agent", "status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "bundle:   NOT SERVED: the installed bundle (versions/1) fails verification" in out
