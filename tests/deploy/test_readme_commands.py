"""Every `fedsignal ...` command the README shows is a real command line."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from fedsignal_cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[list[str]]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines: list[str] = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.split("#", 1)[0].strip()
            for part in line.split(";"):
                part = part.strip()
                m = re.search(r"(?:^|&& |/)fedsignal (.*)$", part)
                if m:
                    lines.append(m.group(1))
    commands = []
    for line in lines:
        line = line.split("&&")[0]
        # Placeholders and alternatives as a user would fill them in.
        line = line.replace("<TOKEN>", "tok").replace("<ID>", "cand-1").replace("<ROLLOUT>", "ro-1")
        line = line.replace("pause|resume|abort", "pause").replace("\"…\"", "why")
        commands.append(shlex.split(line))
    return commands


def test_the_readme_shows_commands() -> None:
    assert len(_commands()) >= 15


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:50])
def test_readme_command_parses(argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README shows `fedsignal {shlex.join(argv)}`, which the CLI rejects (exit {exc.code})")
    assert callable(getattr(args, "func", None))


# ---------------------------------------------------------------------------
# The separate-run section, executed for real, in order, on this host.
# ---------------------------------------------------------------------------

SECTION = "## Running the server and collectors separately"


def _section_lines() -> list[str]:
    """Logical command lines of the section's bash block: continuations joined, comments dropped."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the separate-run section has no bash block"
    lines = []
    for raw in block.group(1).replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        lines += [part.strip() for part in line.split(";") if part.strip()]
    return lines


@pytest.mark.slow
def test_the_separate_run_section_runs_as_pasted_on_one_host(tmp_path: Path) -> None:
    """Adaptations to one host, and nothing else: SQLite, directories under tmp, localhost, free ports.

    The commands that keep running (`server serve`, `agent run`) run in the background, as in a second
    terminal, and stop at the end. The one thing no command can do here is the detector's: a candidate
    needs k = 5 tenants and a closed hourly window, so the test creates one in the server's database
    before the first command that names <ID>. The admin hands the tenant its ca.crt (copied).
    """
    from tests.deploy.local_run import LocalRun, free_port, free_port_pair

    home = tmp_path / "home"
    home.mkdir()
    port, metrics = free_port_pair(), free_port()
    database = f"sqlite:///{tmp_path / 'server.db'}"
    state, agent_state = tmp_path / "server-state", tmp_path / "agent-state"
    run = LocalRun(tmp_path, env={"HOME": str(home), "FEDSIGNAL_KEY_PASSPHRASE": "correct horse battery"})
    replacements = [
        ("postgresql://fedsignal@db.internal:5432/fedsignal", database),
        ("/var/lib/fedsignal-agent", str(agent_state)), ("/var/lib/fedsignal", str(state)),
        ("signals.example.internal", "localhost"), ("0.0.0.0:7443", f"127.0.0.1:{port}"),
        (":7443", f":{port}"), ("--metrics-port 9464", f"--metrics-port {metrics}"),
        ("~/", f"{home}/"), ('"…"', '"README test"'),
    ]
    values: dict[str, str] = {}
    try:
        for line in _section_lines():
            for old, new in replacements:
                line = line.replace(old, new)
            if line.startswith("export "):
                for assignment in shlex.split(line)[1:]:
                    name, _, value = assignment.partition("=")
                    run.env[name] = value.replace("~", str(home), 1) if value.startswith("~") else value
                continue
            argv = shlex.split(line)
            assert argv[0] == "fedsignal", f"the section runs only fedsignal commands, not {line!r}"
            args = argv[1:]
            if "<ID>" in args and "<ID>" not in values:
                values["<ID>"] = _candidate_standing_in_for_detection(database, state)
            if "<TOKEN>" in args:
                (run.cwd / "ca.crt").write_bytes((home / "fedsignal-admin" / "ca.crt").read_bytes())
            variants = [args]
            if "pause|resume|abort" in args:
                variants = [[a.replace("pause|resume|abort", v) for a in args] for v in ("pause", "resume", "abort")]
            for variant in variants:
                variant = [values.get(a, a) for a in variant]
                leftover = [a for a in variant if a.startswith("<") and a.endswith(">")]
                assert not leftover, f"no value for {leftover} in `{shlex.join(variant)}`"
                if variant[:2] == ["server", "serve"]:
                    run.start([sys.executable, "-m", "fedsignal_cli", *variant], "server", [port, port + 1])
                elif variant[:2] == ["agent", "run"]:
                    otlp, resolve = free_port(), free_port()
                    _listen_on(agent_state / "collector.toml", otlp, resolve)
                    run.start([sys.executable, "-m", "fedsignal_cli", *variant], "agent", [otlp, resolve])
                else:
                    out = run.fedsignal(variant)
                    if variant[:2] == ["admin", "enroll-token"]:
                        values["<TOKEN>"] = out.split()[0]
                    if variant[:3] == ["admin", "rollout", "start"]:
                        found = re.search(r"^rollout\s+(\S+)", out, flags=re.M)
                        assert found, out
                        values["<ROLLOUT>"] = found.group(1)
        assert (home / "keys" / "alice.pub.json").exists() and (home / "fedsignal-admin" / "client.key").exists()
        assert {"<TOKEN>", "<ID>", "<ROLLOUT>"} <= set(values)
        assert "audit chain verified" in run.fedsignal(["admin", "audit", "verify"])
    finally:
        codes = run.stop_all()
    assert codes == [0] * len(codes), f"background commands did not stop cleanly: {codes}"


def _listen_on(config: Path, otlp: int, resolve: int) -> None:
    """The starter config, on free loopback ports (other collectors may hold :4317 and :8787 here)."""
    config.write_text(f'otlp_listen = "127.0.0.1:{otlp}"\nresolve_listen = "127.0.0.1:{resolve}"\n'
                      + config.read_text())


def _candidate_standing_in_for_detection(database_url: str, state_dir: Path) -> str:
    from server.context import ServerContext, ServerSettings
    from server.db import transaction
    from server.review.workflow import create_candidate

    ctx = ServerContext.create(ServerSettings(database_url=database_url, state_dir=state_dir))
    try:
        with transaction(ctx.sessions) as s:
            rec = create_candidate(
                s, cohort="retail", category="wrong_tool", kind="routing_rule", risk_class="low",
                artifacts=[("routing_rule.billing", "routing_rule", b'{"intent": "billing", "tool": "invoice_lookup"}')],
                evidence={"rule": "above_threshold"}, rollout_plan_json="", dedupe_key="readme", now=ctx.clock(),
            )
            assert rec is not None
            return rec.id
    finally:
        ctx.engine.dispose()
