"""The typed loader refuses unknown keys and mistyped values, naming file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregation.typed import DataFileError, StrictModel, load_json, load_toml, validate


class Loop(StrictModel):
    insecure_dev: bool = False
    interval_seconds: float = 5.0


class Budget(StrictModel):
    rho_per_period: float = 10.0


class Cohort(StrictModel):
    name: str


class Config(StrictModel):
    state_dir: Path = Path("state")
    otlp_listen: str = "127.0.0.1:4317"
    loop: Loop = Loop()
    budget: Budget = Budget()
    cohorts: tuple[Cohort, ...] = ()


def write(tmp_path: Path, text: str, name: str = "collector.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def refusal(path: Path) -> str:
    """The message :func:`load_toml` refuses ``path`` with."""
    with pytest.raises(DataFileError) as err:
        load_toml(Config, path)
    return str(err.value)


def test_a_valid_file_loads_with_defaults_written_once(tmp_path: Path) -> None:
    cfg = load_toml(Config, write(tmp_path, 'state_dir = "/var/lib/x"\n[loop]\ninterval_seconds = 2\n'))
    assert cfg.state_dir == Path("/var/lib/x")
    assert cfg.loop == Loop(insecure_dev=False, interval_seconds=2.0)
    assert cfg.budget.rho_per_period == 10.0


def test_a_typo_is_refused_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, '# comment\nstate_dir = "s"\notlp_lsiten = "0.0.0.0:1"\n')
    assert refusal(p) == f"{p}:3: otlp_lsiten: unknown key (did you mean otlp_listen?)"


def test_a_typo_inside_a_table_names_the_dotted_key_and_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[loop]\ninsecure_dev = false\n\n[budget]\nrho_per_perod = 0.1\n')
    assert refusal(p) == f"{p}:5: budget.rho_per_perod: unknown key (did you mean rho_per_period?)"


def test_the_string_false_is_not_a_boolean(tmp_path: Path) -> None:
    p = write(tmp_path, '[loop]\ninsecure_dev = "false"\n')
    assert refusal(p) == f"{p}:2: loop.insecure_dev: expected true or false, got the string 'false'"


def test_every_problem_is_listed_and_array_tables_are_located(tmp_path: Path) -> None:
    p = write(tmp_path, '[[cohorts]]\nname = "a"\n[[cohorts]]\nname = 7\n[loop]\ninterval_seconds = "fast"\n')
    lines = sorted(refusal(p).splitlines())
    assert len(lines) == 2
    assert lines[0] == f"{p}:4: cohorts[1].name: input should be a valid string, got 7"
    assert lines[1] == f"{p}:6: loop.interval_seconds: input should be a valid number, got the string 'fast'"


def test_broken_toml_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    p = write(tmp_path, 'state_dir = "s"\nloop = = 3\n')
    with pytest.raises(DataFileError, match=r"collector.toml:\d+: \(top level\): not valid TOML"):
        load_toml(Config, p)
    with pytest.raises(DataFileError, match="file not found"):
        load_toml(Config, tmp_path / "absent.toml")


def test_json_files_are_located_too(tmp_path: Path) -> None:
    p = write(tmp_path, '{\n  "loop": {\n    "insecure_dev": true,\n    "intervall": 3\n  }\n}\n', "data.json")
    with pytest.raises(DataFileError) as err:
        load_json(Config, p)
    assert str(err.value) == f"{p}:4: loop.intervall: unknown key (did you mean interval_seconds?)"
    with pytest.raises(DataFileError, match=r"data.json:1: \(top level\): not valid JSON"):
        load_json(Config, p, text="{nope")


def test_in_memory_documents_validate_without_text() -> None:
    assert validate(Config, {"state_dir": Path("/x")}, source="<settings>").state_dir == Path("/x")
    with pytest.raises(DataFileError, match=r"^<settings>: budget: "):
        validate(Config, {"budget": 3}, source="<settings>")
