"""What a new operator gets wrong about the database: a mistyped URL, a database that is down, a schema
never created or left behind. Each is one line naming what to do, never a traceback nor a password."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from aggregation.typed import DataFileError
from fedsignal_cli.main import main
from server.app import run_jobs_once
from server.context import ServerSettings
from server.db import make_engine
from server.migrate import downgrade, head_revision, init_db, schema_problem
from tests.harness import Harness

# Nothing listens on port 1 of loopback: the connection is refused at once.
UNREACHABLE = "postgresql://postgres:hunter2@127.0.0.1:1/fedsignal"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a database URL"),
        ("postgresql://postgres:hunter2@127.0.0.1:notaport/x", "not a database URL"),
        ("bogus://x", "database driver 'bogus' is not supported"),
        ("postgresql+psycopg2://postgres:hunter2@127.0.0.1/x", "database driver 'postgresql+psycopg2'"),
        ("mysql://root@127.0.0.1/x", "database driver 'mysql'"),
        ("sqlite:////nonexistent-dir-of-fedsignal/server.db", "directory /nonexistent-dir-of-fedsignal does not exist"),
    ],
)
def test_a_mistyped_database_url_is_refused_by_the_settings(url: str, says: str) -> None:
    with pytest.raises(DataFileError) as caught:
        ServerSettings.parse({"database_url": url}, source="test")
    message = str(caught.value)
    assert "database_url" in message and says in message
    assert "hunter2" not in message  # the password is shown as ***
    assert "value error" not in message.lower()  # the validator's own sentence, not pydantic's label


def test_the_supported_urls_pass(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path / 'a.db'}", "sqlite://", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert ServerSettings.parse({"database_url": url}, source="test").database_url == url


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("fedsignal")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_database_that_is_down_is_one_line_without_the_password(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["init-db"], ["upgrade"], ["enroll-token", "--tenant", "t", "--cohort", "c"]):
        rc = main(["server", *command, "--state-dir", str(tmp_path / "state"), "--database-url", UNREACHABLE])
        line = _one_error_line(capsys)
        assert rc == 4, command
        assert line.startswith("fedsignal: error: database error: connection failed") and "Connection refused" in line
        assert "hunter2" not in line


def test_init_refuses_a_database_that_is_down_before_writing_any_key(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    rc = main(["server", "init", "--state-dir", str(state), "--admin-out", str(tmp_path / "admin"),
               "--database-url", UNREACHABLE])
    assert rc == 4 and "database error" in _one_error_line(capsys)
    assert not (state / "ca").exists() and not (tmp_path / "admin").exists()


def test_commands_refuse_a_sqlite_file_that_is_not_there_without_creating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    state = str(tmp_path / "state")
    url = f"sqlite:///{missing}"
    assert main(["server", "enroll-token", "--tenant", "t", "--cohort", "c", "--state-dir", state,
                 "--database-url", url]) == 1
    assert f"no database at {missing}: run `fedsignal server init-db`" in _one_error_line(capsys)
    assert not missing.exists()
    # serve (a subprocess: it sets up the process's logging).
    done = subprocess.run(
        [sys.executable, "-m", "fedsignal_cli", "server", "serve", "--state-dir", state, "--database-url", url,
         "--listen", "127.0.0.1:0", "--enrollment-listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"no database at {missing}" in done.stderr.strip().splitlines()[-1]
    assert not missing.exists()


def test_commands_refuse_a_database_without_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    state = str(tmp_path / "state")
    rc = main(["server", "enroll-token", "--tenant", "t", "--cohort", "c", "--state-dir", state, "--database-url", url])
    assert rc == 1
    assert "holds no fedsignal schema: run `fedsignal server init-db`" in _one_error_line(capsys)
    # init-db makes it, after which the same command works.
    assert main(["server", "init-db", "--state-dir", state, "--database-url", url]) == 0
    assert main(["server", "enroll-token", "--tenant", "t", "--cohort", "c", "--state-dir", state,
                 "--database-url", url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("fst_")  # the token


def test_serve_refuses_a_database_without_the_schema_instead_of_failing_every_job(tmp_path: Path) -> None:
    # A subprocess: were the check missing, serve would run until the timeout.
    state = tmp_path / "state"
    assert main(["server", "init", "--state-dir", str(state), "--admin-out", str(tmp_path / "admin"),
                 "--database-url", f"sqlite:///{tmp_path / 'made.db'}"]) == 0
    (tmp_path / "empty.db").touch()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "fedsignal_cli", "server", "serve", "--state-dir", str(state), "--database-url", empty,
         "--listen", "127.0.0.1:0", "--enrollment-listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "holds no fedsignal schema" in done.stderr.strip().splitlines()[-1]


def test_schema_problem_names_an_older_revision_and_serves_a_newer_one(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert "holds no fedsignal schema" in (schema_problem(engine) or "")
        init_db(engine)
        assert schema_problem(engine) is None
        downgrade(engine, "-1")
        problem = schema_problem(engine) or ""
        assert f"this release needs {head_revision()}" in problem and "fedsignal server upgrade" in problem
        init_db(engine)
        # A revision this release does not know is a newer release's (upgraded before its replicas roll out).
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed0001'"))
        assert schema_problem(engine) is None
    finally:
        engine.dispose()


def test_a_job_that_cannot_reach_the_database_logs_one_warning_line(harness: Harness,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    def unreachable(ctx: object) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection failed: port 1 refused\nhint"))

    with caplog.at_level(logging.INFO, logger="fedsignal.server"):
        outcome = run_jobs_once(harness.ctx, [("t:db", unreachable)])
    assert outcome == {"t:db": "database error: connection failed: port 1 refused"}
    records = [r for r in caplog.records if r.name == "fedsignal.server" and "database error" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.WARNING, None)]
