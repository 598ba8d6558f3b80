"""The deployment files parse, and every fedsignal command they run exists."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsignal_cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _dockerfile_commands() -> Iterator[list[str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    entrypoint: list[str] = []
    for line in text.splitlines():
        if line.startswith("ENTRYPOINT"):
            entrypoint = json.loads(line.split(None, 1)[1])
        if line.startswith("CMD"):
            yield entrypoint[1:] + json.loads(line.split(None, 1)[1])


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def _compose_commands() -> Iterator[list[str]]:
    for name, svc in _compose()["services"].items():
        if name == "postgres":
            continue
        if svc.get("entrypoint") == ["sh", "-c"]:
            for part in svc["command"][0].split("&&"):
                argv = shlex.split(part)
                if argv[0] == "fedsignal":
                    yield argv[1:]
            continue
        yield list(svc["command"])


def _k8s_docs() -> Iterator[dict[str, Any]]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def _k8s_commands() -> Iterator[list[str]]:
    for doc in _k8s_docs():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            if c.get("image", "").startswith("fedsignal"):
                yield list(c["args"])


def _all_commands() -> list[list[str]]:
    return [*_dockerfile_commands(), *_compose_commands(), *_k8s_commands()]


def test_files_parse_and_name_the_pieces() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"postgres", "server", "collector-acme", "collector-globex"} <= set(compose["services"])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _k8s_docs()}
    assert ("Deployment", "fedsignal-server") in kinds
    assert ("Service", "fedsignal-server") in kinds
    assert any(k == "Secret" for k, _ in kinds)
    assert any(k == "Deployment" and n.startswith("fedsignal-collector") for k, n in kinds)
    server = next(d for d in _k8s_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "fedsignal-server")
    assert server["spec"]["replicas"] >= 2


@pytest.mark.parametrize("argv", _all_commands(), ids=lambda a: shlex.join(a)[:60])
def test_every_command_exists_in_the_cli(argv: list[str]) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse rejected the command line
        pytest.fail(f"`fedsignal {shlex.join(argv)}` is not a valid command (exit {exc.code})")
    assert callable(getattr(args, "func", None)), f"`fedsignal {shlex.join(argv)}` names no command"


def test_collector_configs_load_with_the_real_loader() -> None:
    import tomllib

    from tenant_agent.config import CollectorConfig

    configs = [tomllib.loads((DEPLOY / "collector.toml").read_text())]
    for doc in _k8s_docs():
        if doc["kind"] == "ConfigMap":
            configs += [tomllib.loads(text) for name, text in doc["data"].items() if name.endswith(".toml")]
    assert len(configs) >= 2
    for cfg in configs:
        loaded = CollectorConfig.from_dict(cfg)
        assert loaded.server and loaded.ca_file is not None
        assert loaded.release.rho <= loaded.budget.rho_per_period


def _dockerfile_mount_points() -> set[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(raw for raw in text.splitlines() if "mkdir -p" in raw)
    words = line.split("mkdir -p", 1)[1].split("&&")[0].split()
    return set(words)


def test_every_compose_volume_mounts_where_the_image_created_an_owned_directory() -> None:
    """A new named volume copies its mount point's owner from the image: uid 10001, not root."""
    owned = _dockerfile_mount_points()
    for name, svc in _compose()["services"].items():
        if name == "postgres":
            continue
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
                continue
            assert source in _compose()["volumes"], f"{name}: volume {source} is not declared"
            assert target in owned, f"{name} mounts {source} at {target}, which the image does not create"


def test_tenants_get_the_ca_certificate_and_never_the_admins_credentials() -> None:
    services = _compose()["services"]
    for name in ("collector-acme", "collector-globex"):
        sources = [v.split(":")[0] for v in services[name]["volumes"]]
        assert "admin-creds" not in sources and "server-ca" in sources
    init = services["server-init"]["command"][0]
    assert "cp /var/lib/fedsignal/admin/ca.crt /var/lib/fedsignal/public/ca.crt" in init
    assert "client.key" not in init


def test_compose_shows_signals_from_its_two_collectors_and_sets_up_the_reviewer() -> None:
    services = _compose()["services"]
    collectors = [n for n in services if n.startswith("collector-")]
    serve = services["server"]["command"]
    k = int(serve[serve.index("--min-tenants") + 1]) if "--min-tenants" in serve else 5
    assert k <= len(collectors), f"k = {k} with {len(collectors)} collectors: no cell would ever be shown"
    assert services["reviewer-keygen"]["command"][:2] == ["admin", "keygen"]
    assert services["root-init"]["command"][:3] == ["admin", "root", "init"]


def test_kubernetes_pods_run_as_the_image_user_and_can_read_their_secrets() -> None:
    for doc in _k8s_docs():
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if doc["kind"] not in ("Deployment", "Job") or pod is None:
            continue
        ctx = pod.get("securityContext", {})
        name = doc["metadata"]["name"]
        assert ctx.get("runAsUser") == 10001 and ctx.get("fsGroup") == 10001, name
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                mode = volume["secret"].get("defaultMode", 0o644)
                assert mode & 0o040, f"{name}: secret {volume['name']} mode {mode:o} is unreadable for fsGroup"
                assert not mode & 0o007, f"{name}: secret {volume['name']} mode {mode:o} is world-readable"
