"""Every `fedsignal admin` failure is one line and a non-zero exit, never a traceback (issue 13.16, 13.15)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from fedsignal_cli.main import main
from server.admin_cli import EXIT_BROKEN_PIPE, reviewer_keys
from tests.harness import Harness
from tests.server.review.cli_world import PASSPHRASE, ReviewCliWorld, review_cli_world


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[ReviewCliWorld]:
    with review_cli_world(database_url, tmp_path) as w:
        yield w


@contextmanager
def closed_stdout() -> Iterator[None]:
    """stdout is a pipe whose reader is gone, as in `fedsignal admin ... | head -1` after head exits.

    Entered in the test body: pytest re-installs its own capture between fixture setup and the call.
    """
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    writer = os.fdopen(write_fd, "w", buffering=1)
    saved, sys.stdout = sys.stdout, writer
    try:
        yield
    finally:
        sys.stdout = saved
        with suppress(OSError):
            writer.close()


@pytest.mark.parametrize("command", [["candidates", "list"], ["signals", "--include-suppressed"]])
def test_piping_into_a_closed_reader_exits_quietly(
        world: ReviewCliWorld, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    for key in ("k1", "k2", "k3"):
        world.propose(key=key, content=f'{{"n": "{key}"}}'.encode())
    with closed_stdout():
        code = main(["admin", *command, *world.conn()])
    assert code == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_root_init_with_a_threshold_above_the_reviewers_is_one_line(
        world: ReviewCliWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's old example: two reviewers, critical=3 (and a root already installed here: rotate)."""
    keys = tmp_path / "keys"
    argv = ["admin", "root", "rotate", "--reviewer", str(keys / "alice.pub.json"),
            "--reviewer", str(keys / "bob.pub.json"), "--key", str(keys / "alice.key"),
            "--passphrase-file", str(world.passphrase_file), "--threshold", "critical=3", *world.conn()]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "critical: threshold 3 needs between 1 and 2 reviewer key(s)" in err


def test_a_root_threshold_below_the_class_thresholds_is_refused_by_the_cli(
        world: ReviewCliWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    reviewers = [f"--reviewer={keys / n}.pub.json" for n in ("alice", "bob", "carol")]
    assert main(["admin", "root", "rotate", *reviewers, "--root-threshold", "1", "--key", str(keys / "alice.key"),
                 "--passphrase-file", str(world.passphrase_file), *world.conn()]) == 1
    assert "root threshold 1 is below the critical threshold 3" in capsys.readouterr().err


def test_an_unreadable_passphrase_file_and_a_missing_public_key_are_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["admin", "keygen", "--out", str(tmp_path), "--passphrase-file", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the passphrase file" in err
    with pytest.raises(reviewer_keys.ReviewerKeyError, match="not a reviewer public key file"):
        reviewer_keys.load_public(tmp_path / "missing.pub.json")
    assert len(PASSPHRASE) >= 8



def test_a_tenant_calling_an_admin_method_is_told_it_needs_an_admin_certificate(harness: Harness) -> None:
    import grpc
    from fedsignal.v1 import admin_pb2

    tenant = harness.tenant("acme")
    with pytest.raises(grpc.RpcError) as caught:
        harness.admin_stub(tenant).ListSignals(admin_pb2.ListSignalsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs an admin certificate; the caller holds a tenant certificate" in (caught.value.details() or "")
