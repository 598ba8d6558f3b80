"""The collector's TOML is typed: typos and wrong types are refused with the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsignal_cli.main import main
from tenant_agent.config import BudgetConfig, CollectorConfig, ConfigError, ReleaseConfig

GOOD = """\
state_dir = "state"
tenant_id = "tenant-1"
cohort = "cohort-a"
otlp_listen = "127.0.0.1:4317"

[budget]
rho_per_period = 1.0
period_days = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        CollectorConfig.load(path)
    message = str(err.value)
    assert "\n" not in message  # one line, for the CLI
    return message


def test_a_misspelt_key_is_an_error_naming_the_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("otlp_listen", "otlp_lsiten"))
    message = refused(path)
    assert f"{path}:4: otlp_lsiten: unknown key (did you mean otlp_listen?)" in message


def test_insecure_dev_as_a_string_is_an_error_not_true(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('cohort = "cohort-a"\n', 'cohort = "cohort-a"\ninsecure_dev = "false"\n'))
    message = refused(path)
    assert f"{path}:4: insecure_dev: expected true or false, got the string 'false'" in message


def test_a_misspelt_budget_key_does_not_silently_keep_the_default(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("rho_per_period = 1.0", "rho_per_perod = 0.1"))
    message = refused(path)
    assert f"{path}:7: budget.rho_per_perod: unknown key (did you mean rho_per_period?)" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('window_seconds = "3600"', "window_seconds"),
        ("window_seconds = -5", "window_seconds"),
        ('privacy_unit = "tenant"', "privacy_unit"),
        ("batch_size = 1.5", "batch_size"),
    ],
)
def test_wrong_types_and_values_name_their_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path, line + "\n" + GOOD)
    assert f"{path}:1: {key}:" in refused(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("otlp_listen", "otlp_lsiten") + '\n[release]\nmechanism = "laplace"\n')
    message = refused(path)
    assert "otlp_lsiten" in message and "release.mechanism" in message


def test_defaults_come_from_the_models_and_relative_paths_from_the_file(tmp_path: Path) -> None:
    config = CollectorConfig.load(write(tmp_path, GOOD))
    assert config.state_dir == tmp_path / "state"
    assert config.budget == BudgetConfig(rho_per_period=1.0, period_days=1.0)
    assert config.release == ReleaseConfig()
    assert config.insecure_dev is False and config.resolve_listen == "127.0.0.1:8787"
    with_ca = CollectorConfig.load(write(tmp_path, 'ca_file = "ca.pem"\n' + GOOD))
    assert with_ca.ca_file == tmp_path / "ca.pem"


def test_a_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    assert "not found (pass --config or --state-dir)" in refused(tmp_path / "absent.toml")


def test_the_cli_prints_a_config_error_on_one_line_and_exits_non_zero(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("otlp_listen", "otlp_lsiten"))
    assert main(["agent", "status", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedsignal: error:") and "otlp_lsiten" in err
    assert "Traceback" not in err


def test_the_documented_example_is_a_valid_config(tmp_path: Path) -> None:
    import tenant_agent.config as module

    doc = module.__doc__ or ""
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = CollectorConfig.load(write(tmp_path, example))
    assert config.close_grace_seconds == 60 and config.redaction.patterns == {"ticket_id": "TCK-[0-9]{6}"}
    assert config.budget.anchor is not None and config.budget.anchor.utcoffset() is not None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///store.db", "store URL sqlite:… is not PostgreSQL"),
        ("bogus://root:hunter2@h/x", "store URL bogus:… is not PostgreSQL"),
        ("postgresql://root:hunter2@h:notaport/x", "store URL is not a database URL"),
    ],
)
def test_a_store_url_that_is_no_postgresql_url_names_its_line(tmp_path: Path, url: str, says: str) -> None:
    message = refused(write(tmp_path, f'store_url = "{url}"\n' + GOOD))
    assert "store_url" in message and says in message
    assert "hunter2" not in message


def test_a_store_database_that_is_down_is_one_cli_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'store_url = "postgresql://postgres:hunter2@127.0.0.1:1/store"\n' + GOOD)
    assert main(["agent", "status", "--config", str(path)]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "hunter2" not in err
    assert err.strip().splitlines()[-1].startswith("fedsignal: error: database error: connection failed")
