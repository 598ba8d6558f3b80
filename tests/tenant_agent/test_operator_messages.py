"""Small things an operator reads: JSONL columns, quiet expected tuf logs, one-line schema-refresh failures."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from tenant_agent.bundles.client import TUF_PAYLOAD_LOGGER, quiet_expected_tuf_logs
from tenant_agent.collector import Collector
from tenant_agent.ingest.jsonl import LineError, read_jsonl
from tenant_agent.redact import Redactor

from .collector.fakes import make_config


def test_a_jsonl_error_at_the_end_of_a_line_reports_its_column(tmp_path: Path) -> None:
    line = '{"schema_version": "1", "session_id": "s1", "timestamp": 5, "intent": "x"'  # no closing brace
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n" + '{"a": 1, "b": oops}\n')
    errors = [e for e in read_jsonl(path, "t", Redactor()) if isinstance(e, LineError)]
    assert [e.line for e in errors] == [1, 2]
    assert errors[0].reason.endswith(f"at column {len(line) + 1}")  # just past the last character, not column 1
    assert errors[1].reason.endswith("at column 15")  # the o of oops


def test_tufs_expected_missing_signature_lines_are_debug_not_info(caplog: pytest.LogCaptureFixture) -> None:
    quiet_expected_tuf_logs()
    quiet_expected_tuf_logs()  # idempotent
    tuf_logger = logging.getLogger(TUF_PAYLOAD_LOGGER)
    assert sum(type(f).__name__ == "_ExpectedMissingSignatures" for f in tuf_logger.filters) == 1
    with caplog.at_level(logging.INFO):
        tuf_logger.info("No signature for keyid %s", "abc")
        tuf_logger.info("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    with caplog.at_level(logging.DEBUG, logger=TUF_PAYLOAD_LOGGER):
        tuf_logger.info("No signature for keyid %s", "abc")
    assert caplog.records[-1].levelno == logging.DEBUG


def test_a_schema_refresh_failure_logs_code_and_details_on_one_line(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    channel = grpc.insecure_channel("127.0.0.1:1")  # nothing listens there
    with Collector(make_config(tmp_path), channel=channel) as c, caplog.at_level(logging.INFO):
        assert c.refresh_schema() is False
    [record] = [r for r in caplog.records if "schema refresh failed" in r.getMessage()]
    message = record.getMessage()
    assert "UNAVAILABLE: " in message and "\n" not in message and "_InactiveRpcError" not in message
    channel.close()
