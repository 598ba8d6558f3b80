"""The CLI's console log line: the message with its structured fields, one line."""

from __future__ import annotations

import logging

import pytest

from fedsignal_cli.main import _console_logging
from server.observability import ConsoleFormatter, log_event


def test_a_console_line_carries_the_structured_fields() -> None:
    record = logging.LogRecord("fedsignal.server", logging.WARNING, __file__, 1, "rpc", None, None)
    record.fields = {"method": "/fedsignal.v1.SecureAggregationService/SubmitAttestation", "code": "ALREADY_EXISTS"}
    assert ConsoleFormatter().format(record) == (
        "rpc method=/fedsignal.v1.SecureAggregationService/SubmitAttestation code=ALREADY_EXISTS")
    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, "plain %s", ("message",), None)
    assert ConsoleFormatter().format(plain) == "plain message"


def test_the_cli_logs_warnings_with_their_fields(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    for handler in saved:
        root.removeHandler(handler)  # pytest's capture handlers: the CLI installs its own when none is set
    try:
        _console_logging(logging.WARNING)
        log_event(logging.getLogger("fedsignal.server"), "rpc", logging.WARNING, method="/m", code="NOT_FOUND")
        assert capsys.readouterr().err == "rpc method=/m code=NOT_FOUND\n"
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
