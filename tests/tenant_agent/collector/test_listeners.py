"""A second collector on a port already in use is refused with a one-line error (no shared SO_REUSEPORT port)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedsignal_cli.main import main
from tenant_agent.collector import Collector
from tenant_agent.serving import ListenError, start_serving

from .fakes import make_config

LOCAL = {"otlp_listen": "127.0.0.1:0", "resolve_listen": "127.0.0.1:0"}


@pytest.mark.parametrize(("listener", "key", "message"), [
    ("otlp_port", "otlp_listen", "cannot listen for OTLP on {taken}: the address is in use"),
    ("resolve_port", "resolve_listen", "cannot serve resolve on {taken}"),
])
def test_a_second_collector_on_a_port_in_use_is_refused(tmp_path: Path, listener: str, key: str, message: str) -> None:
    with Collector(make_config(tmp_path / "a", **LOCAL)) as first:
        serving = start_serving(first)
        try:
            taken = f"127.0.0.1:{getattr(serving, listener)}"
            second = Collector(make_config(tmp_path / "b", **{**LOCAL, key: taken}))
            with second, pytest.raises(ListenError, match=message.format(taken=taken)):
                start_serving(second)
        finally:
            serving.stop(0)


def test_agent_run_on_a_taken_port_is_one_line_and_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    with Collector(make_config(tmp_path / "a", **LOCAL)) as first:
        serving = start_serving(first)
        try:
            config = tmp_path / "collector.toml"
            config.write_text(
                'state_dir = "b"\ntenant_id = "tenant-1"\ncohort = "cohort-a"\n'
                f'otlp_listen = "127.0.0.1:{serving.otlp_port}"\nresolve_listen = "127.0.0.1:0"\n'
            )
            assert main(["agent", "run", "--config", str(config)]) == 2
        finally:
            serving.stop(0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "address is in use" in err and "Traceback" not in err
    # What `agent run` created before it stopped is private.
    logs = tmp_path / "b" / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((logs / "collector.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700
