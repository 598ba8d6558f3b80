"""Every `fedsignal ...` command the README shows is a real command line."""

from __future__ import annotations

import re
import shlex
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
