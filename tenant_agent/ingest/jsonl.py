"""JSON Lines import of decision events.

One JSON object per line (the schema of :mod:`tenant_agent.ingest.records`).
A bad line never stops the import and never half-counts: the reader yields a
:class:`LineError` with the 1-based line number and the reason, and an event
is yielded only once its whole line has been parsed, validated and redacted.
Blank lines are skipped. With ``keep_text=False`` free texts are checked and
discarded unread (see :func:`~tenant_agent.ingest.records.event_from_dict`),
each one counted in ``discarded``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aggregation.errors import FedsignalError
from aggregation.events import DecisionEvent
from tenant_agent.ingest.records import DiscardedTexts, EventFormatError, event_from_dict
from tenant_agent.redact import Redactor

#: Longest line accepted (bytes); longer lines are reported, not parsed.
MAX_LINE_BYTES = 1 << 20


class JsonlFileError(FedsignalError):
    """The JSON Lines file itself cannot be read."""


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def read_jsonl(
    path: str | Path,
    tenant_id: str,
    redactor: Redactor,
    *,
    keep_text: bool = True,
    discarded: DiscardedTexts | None = None,
) -> Iterator[DecisionEvent | LineError]:
    """Decision events and line errors, in file order (``keep_text``: as :func:`event_from_dict`;
    ``discarded`` counts the texts dropped unread)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator's with-block below
    except OSError as exc:
        raise JsonlFileError(f"cannot open {path}: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                yield LineError(number, f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield LineError(number, f"not UTF-8 (byte {exc.start})")
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                # Column within this line (1-based characters); the line's own newline is not part of it, so an
                # error at its end is reported there, not as column 1 of a next line.
                yield LineError(number, f"invalid JSON: {exc.msg} at column {exc.pos + 1}")
                continue
            try:
                event = event_from_dict(doc, tenant_id, redactor, keep_text=keep_text)
            except EventFormatError as exc:
                yield LineError(number, str(exc))
                continue
            if not keep_text and discarded is not None and doc.get("text"):
                discarded.add(1)  # a valid event: its text was a non-empty string, dropped unread
            yield event
