"""``fedsignal agent replay-set`` and ``fedsignal agent replay`` (local, un-noised, nothing sent)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aggregation.clock import from_unix, system_clock
from aggregation.events import DecisionEvent, ToolCall
from aggregation.typed import DataFileError
from fedsignal_cli.main import main
from tenant_agent.replay_cli import load_replay_config
from tenant_agent.replay_set import ReplaySet

T0 = time.time()  # the CLI reads the wall clock (retention)


def _state(tmp_path: Path, enabled: bool = True) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "collector.toml").write_text('state_dir = "."\ntenant_id = "t1"\ncohort = "c"\n')
    (state / "replay.toml").write_text(f"[replay_set]\nenabled = {str(enabled).lower()}\n")
    cfg = load_replay_config(state)
    rs = ReplaySet(state, cfg.policy(), clock=lambda: from_unix(T0))
    rs.capture([DecisionEvent(tenant_id="t1", session_id=f"s{i}", timestamp=T0, event_id=f"e{i}", intent="refund",
                              outcome="failure", tool_calls=(ToolCall("a", expected="b"),)) for i in range(3)])
    rs.close()
    return state


def test_list_show_and_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path)
    assert main(["agent", "replay-set", "list", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "replay set: on; 3 case(s)" in out and "wrong_tool" in out
    case_id = next(line.split()[0] for line in out.splitlines() if line.startswith("case-"))
    assert main(["agent", "replay-set", "show", case_id, "--state-dir", str(state)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gold"] == {"expected_tools": ["b"]} and shown["text"] is None
    assert main(["agent", "replay-set", "show", "case-nope", "--state-dir", str(state)]) != 0
    assert "no case" in capsys.readouterr().err
    assert main(["agent", "replay-set", "purge", "--yes", "--state-dir", str(state)]) == 0
    assert "deleted 3 case(s)" in capsys.readouterr().out


def test_a_disabled_set_keeps_nothing_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path, enabled=False)
    assert main(["agent", "replay-set", "list", "--state-dir", str(state)]) == 0
    assert "replay set: off" in capsys.readouterr().out


def test_a_typo_in_replay_toml_names_the_key_and_line(tmp_path: Path) -> None:
    (tmp_path / "replay.toml").write_text("[replay_set]\nenabled = true\nmax_case = 3\n")
    with pytest.raises(DataFileError, match=r"replay.toml:3: replay_set.max_case"):
        load_replay_config(tmp_path)


def test_the_refresh_period_is_typed_and_reaches_the_policy(tmp_path: Path) -> None:
    (tmp_path / "replay.toml").write_text("[replay_set]\nenabled = true\nrefresh_minutes = 90\n")
    assert load_replay_config(tmp_path).policy().refresh_seconds == 5400.0
    (tmp_path / "replay.toml").write_text("[replay_set]\nenabled = true\nrefresh_minutes = 0\n")
    with pytest.raises(DataFileError, match=r"replay.toml:3: replay_set.refresh_minutes"):
        load_replay_config(tmp_path)


def test_replay_by_hand_needs_an_installed_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = _state(tmp_path)
    assert main(["agent", "replay", "--candidate", "cand-x", "--state-dir", str(state)]) != 0
    assert "no bundle installed" in capsys.readouterr().err


def test_a_running_collector_captures_cases_and_replays_in_the_background_only_when_enabled(tmp_path: Path) -> None:
    import random

    from tenant_agent import replay_agent
    from tenant_agent.collector import Collector
    from tests.tenant_agent.collector.fakes import make_config

    off = tmp_path / "off"
    with Collector(make_config(off), clock=system_clock, rng=random.Random(1)) as c:
        c.record_many([DecisionEvent(tenant_id="tenant-1", session_id="s", timestamp=time.time(), event_id="e",
                                     outcome="failure", tool_calls=(ToolCall("a", expected="b"),))])
        replay_agent.tick(c)  # no bundle: nothing to replay
    assert not (off / "replay.db").exists()  # opt-in: nothing kept, not even an empty file

    on = tmp_path / "on"
    on.mkdir()
    (on / "replay.toml").write_text("[replay_set]\nenabled = true\n")
    with Collector(make_config(on), clock=system_clock, rng=random.Random(1)) as c:
        c.record_many([DecisionEvent(tenant_id="tenant-1", session_id="s", timestamp=time.time(), event_id="e",
                                     outcome="failure", tool_calls=(ToolCall("a", expected="b"),))])
        assert replay_agent.attached(c).replay_set.counts() == {"wrong_tool": 1}
