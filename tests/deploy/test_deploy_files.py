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


def _compose_commands() -> Iterator[list[str]]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in doc["services"].items():
        if name == "postgres":
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
