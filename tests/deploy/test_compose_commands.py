"""deploy/compose.yaml's commands, in the order its header gives, run on this host without containers.

Each `docker compose ... run --rm SERVICE [ARGS]` runs that service's command (or ARGS), each
`up -d SERVICE...` starts the services' commands in the background, as the container engine would;
`export VAR=$(... | head -1)` keeps the first line of the output. The only adaptations to one host:
every named volume is a directory under tmp (the same directory for every service mounting it), the
bind-mounted collector.toml is a copy with those paths and with free loopback ports (two collectors
share this host's network here), the host name `server` is `localhost`, published ports are free
ports, and PostgreSQL is SQLite (the postgres service itself is skipped).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.local_run import LocalRun, free_port, free_port_pair

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = "docker compose -f deploy/compose.yaml"


def _header_steps() -> list[str]:
    steps: list[str] = []
    for raw in (DEPLOY / "compose.yaml").read_text().splitlines():
        if not raw.startswith("#   "):
            if steps:
                break
            continue
        line = raw[4:].split("  #", 1)[0].strip()
        if line:
            steps.append(line)
    return steps


class ComposeOnOneHost:
    def __init__(self, tmp: Path) -> None:
        self.doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
        self.run = LocalRun(tmp)
        self.tmp = tmp
        self.port = free_port_pair()
        self.ports = {"7443": str(self.port), "7444": str(self.port + 1), "7445": str(free_port()),
                      "9464": str(free_port())}
        self.database = f"sqlite:///{tmp / 'server.db'}"
        self.started: list[str] = []

    def _mounts(self, service: str) -> list[tuple[str, str]]:
        """(container path, host path) of the service's volumes, longest container path first."""
        out = []
        for volume in self.doc["services"][service].get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                host = self._collector_config(service, DEPLOY / source)
            else:
                host = self.tmp / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            out.append((target, str(host)))
        return sorted(out, key=lambda m: -len(m[0]))

    def adapt(self, service: str, text: str) -> str:
        for target, host in self._mounts(service):
            text = text.replace(target, host)
        text = re.sub(r"\bserver:(\d+)", lambda m: f"localhost:{self.ports[m.group(1)]}", text)
        text = text.replace("--host server", "--host localhost")
        text = text.replace("postgresql://fedsignal:fedsignal@postgres:5432/fedsignal", self.database)
        text = re.sub(r"0\.0\.0\.0:(\d+)", lambda m: f"127.0.0.1:{self.ports.get(m.group(1), m.group(1))}", text)
        text = re.sub(r"--metrics-port (\d+)", lambda m: f"--metrics-port {self.ports[m.group(1)]}", text)
        return text

    def _collector_config(self, service: str, source: Path) -> Path:
        path = self.tmp / "configs" / service / source.name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text()
            for volume in self.doc["services"][service]["volumes"]:
                src, target = volume.split(":")[:2]
                if not src.startswith("./"):
                    text = text.replace(target, str(self.tmp / "volumes" / src))
            text = re.sub(r'"server:(\d+)"', lambda m: f'"localhost:{self.ports[m.group(1)]}"', text)
            self.ports[f"{service}-otlp"], self.ports[f"{service}-resolve"] = str(free_port()), str(free_port())
            text = re.sub(r'otlp_listen = "[^"]*"', f'otlp_listen = "127.0.0.1:{self.ports[service + "-otlp"]}"', text)
            text = re.sub(r'resolve_listen = "[^"]*"',
                          f'resolve_listen = "127.0.0.1:{self.ports[service + "-resolve"]}"', text)
            path.write_text(text)
        return path

    def _env(self, service: str) -> dict[str, str]:
        env = dict(self.doc["services"][service].get("environment") or {})
        out = {}
        for key, value in env.items():
            value = re.sub(r"\$\{(\w+):[-?][^}]*\}", lambda m: self.run.env.get(m.group(1), ""), str(value))
            out[key] = self.adapt(service, value)
        return out

    def _argv(self, service: str, override: list[str] | None) -> list[str]:
        svc = self.doc["services"][service]
        command = override if override else list(svc["command"])
        entrypoint = svc.get("entrypoint", ["fedsignal"])
        return [self.adapt(service, part) for part in [*entrypoint, *command]]

    def run_once(self, service: str, override: list[str] | None = None) -> str:
        argv = self._argv(service, override)
        saved = dict(self.run.env)
        self.run.env.update(self._env(service))
        try:
            if argv[0] == "fedsignal":
                return self.run.fedsignal(argv[1:])
            return self.run.shell(argv)
        finally:
            self.run.env = saved

    def up(self, service: str) -> None:
        if service == "postgres":
            return  # SQLite stands in for it
        argv = self._argv(service, None)
        assert argv[0] == "fedsignal"
        ports = [int(self.ports["7443"]), int(self.ports["7444"])] if service == "server" else []
        self._mounts(service)  # writes the adapted config, choosing the collector's ports
        if service.startswith("collector-"):
            ports = [int(self.ports[f"{service}-otlp"]), int(self.ports[f"{service}-resolve"])]
        self.run.start([sys.executable, "-m", "fedsignal_cli", *argv[1:]], service, ports, env=self._env(service))
        self.started.append(service)

    def step(self, line: str) -> None:
        captured = re.fullmatch(r"export (\w+)=\$\(" + re.escape(COMPOSE) + r" (.*) \| head -1\)", line)
        if captured:
            out = self._compose(shlex.split(captured.group(2)))
            self.run.env[captured.group(1)] = out.splitlines()[0].strip()
            return
        if line.startswith("export "):
            for assignment in shlex.split(line)[1:]:
                name, _, value = assignment.partition("=")
                self.run.env[name] = value
            return
        assert line.startswith(COMPOSE + " "), f"the header names a command this test cannot run: {line!r}"
        self._compose(shlex.split(line[len(COMPOSE) + 1:]))

    def _compose(self, words: list[str]) -> str:
        if words[:2] == ["run", "--rm"]:
            return self.run_once(words[2], words[3:] or None)
        if words[:2] == ["up", "-d"]:
            for service in words[2:]:
                self.up(service)
            return ""
        raise AssertionError(f"unsupported compose command {words}")


@pytest.mark.slow
def test_the_compose_files_commands_bring_up_a_working_loop(tmp_path: Path) -> None:
    host = ComposeOnOneHost(tmp_path)
    steps = _header_steps()
    assert any("root-init" in s for s in steps) and any("reviewer-keygen" in s for s in steps)
    try:
        for line in steps:
            host.step(line)
        assert set(host.started) == {"server", "collector-acme", "collector-globex"}
        volumes = tmp_path / "volumes"
        # Both tenants enrolled with only the CA certificate and pinned the reviewers' root.
        for tenant in ("acme", "globex"):
            assert (volumes / f"{tenant}-state" / "trust" / "root.json").exists()
        assert sorted(p.name for p in (volumes / "server-ca").iterdir()) == ["ca.crt"]
        assert (volumes / "reviewer-keys" / "alice.key").exists()
        tokens = [host.run.env["ACME_ENROLL_TOKEN"], host.run.env["GLOBEX_ENROLL_TOKEN"]]
        assert all(tokens) and tokens[0] != tokens[1]
        shown = host.run_once("admin", ["admin", "root", "show"])
        assert '"version": 1' in shown
        # Each collector serves its agents: the resolve API answers (no bundle yet: the baseline).
        for tenant in ("acme", "globex"):
            port = host.ports[f"collector-{tenant}-resolve"]
            url = f"http://127.0.0.1:{port}/v1/resolve?artifact=routing_rule.billing&session=s1"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert json.loads(response.read())["version"] == "baseline"
    finally:
        codes = host.run.stop_all()
    assert codes == [0] * len(codes), f"background services did not stop cleanly: {codes}"
