"""Typed configuration and data files: one loader, errors a user can act on.

Every configuration file (the collector's TOML, the server settings) and every
versioned data file (taxonomy, remediation map, rollout plans, schema
template) is a pydantic v2 model derived from :class:`StrictModel`: unknown keys
are refused, and values are checked with the strictness of a config file — a
string is never a boolean, so ``insecure_dev = "false"`` is an error, not true.

Validation runs in pydantic's JSON mode, which is what a file means: strings
become paths or datetimes where a field asks for one, integers are accepted
for floats, and nothing else is coerced.

A failure raises :class:`DataFileError`, one line per problem, each naming the
file, the line (when the text is at hand) and the key::

    collector.toml:7: otlp_lsiten: unknown key (did you mean otlp_listen?)
    collector.toml:12: loop.insecure_dev: expected true or false, got the string 'false'
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from aggregation.errors import FedsignalError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class StrictModel(BaseModel):
    """Base of every typed configuration and data-file model: unknown keys refused, frozen, strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (key path, line) and what."""

    loc: Loc
    message: str
    line: int | None = None

    @property
    def key(self) -> str:
        return ".".join(f"[{p}]" if isinstance(p, int) else p for p in self.loc).replace(".[", "[") or "(top level)"


class DataFileError(FedsignalError, ValueError):
    """A configuration or data file that does not match its model; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = []
        for p in self.problems:
            where = f"{source}:{p.line}" if p.line is not None else source
            lines.append(f"{where}: {p.key}: {p.message}")
        super().__init__("\n".join(lines))


def validate(model: type[M], doc: Any, *, source: str, text: str | None = None, fmt: str = "toml") -> M:
    """``doc`` (parsed from ``source``) as a ``model``; problems are located in ``text`` when given.

    ``fmt`` ("toml" or "json") says how to find a key's line in ``text``.
    """
    try:
        return model.model_validate_json(json.dumps(doc, default=_json_default))
    except ValidationError as exc:
        problems = [_problem(model, err, text, fmt) for err in exc.errors(include_url=False)]
        raise DataFileError(source, problems) from None


def load_toml(model: type[M], path: str | Path) -> M:
    """Read, parse and validate the TOML file at ``path``."""
    path = Path(path)
    text = _read(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise DataFileError(str(path), [Problem((), f"not valid TOML: {_strip_position(str(exc))}", line)]) from None
    return validate(model, doc, source=str(path), text=text, fmt="toml")


def load_json(model: type[M], path: str | Path, *, text: str | None = None) -> M:
    """Read (unless ``text`` is given), parse and validate the JSON file at ``path``."""
    path = Path(path)
    text = _read(path) if text is None else text
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(str(path), [Problem((), f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno)]) from None
    return validate(model, doc, source=str(path), text=text, fmt="json")


# -- internals ---------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(str(path), [Problem((), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(str(path), [Problem((), f"cannot be read: {exc}")]) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a configuration value")


def _problem(model: type[BaseModel], err: Mapping[str, Any], text: str | None, fmt: str) -> Problem:
    loc: Loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if allowed else []
        hint = f" (did you mean {close[0]}?)" if close else (f" (allowed: {', '.join(allowed)})" if allowed else "")
        message = f"unknown key{hint}"
    elif kind == "bool_type":
        message = f"expected true or false, got {_shown(err.get('input'))}"
    elif kind == "missing":
        message = "required key is missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence, without pydantic's label
        message = f"{msg[0].lower()}{msg[1:]}, got {_shown(err.get('input'))}"
    line = None
    if text is not None:
        line = _toml_line(text, loc) if fmt == "toml" else _json_line(text, loc)
    return Problem(loc, message, line)


_URL_PASSWORD = re.compile(r"(://[^/:@\s]*):[^@/\s]*@")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        # A URL's password never reaches a message (a database URL with one was mistyped).
        shown = _URL_PASSWORD.sub(r"\1:***@", value)
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the (nested) model at ``loc``, when it can be followed through the annotations."""
    current: Any = model
    keyed = False  # the next string part is a key of a dict-valued field, not a field name
    for part in loc:
        if isinstance(part, int):
            continue
        if keyed:
            keyed = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        keyed = get_origin(field.annotation) in (dict, Mapping)
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _toml_parts(dotted: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.split(r"\.(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$)", dotted)]


def _toml_line(text: str, loc: Loc) -> int | None:
    """The 1-based line that defines ``loc`` (the closest enclosing definition when the key itself is absent)."""
    table: list[str | int] = []
    counts: dict[tuple[str | int, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _TOML_HEADER.match(raw)
        if header:
            parts: list[str | int] = list(_toml_parts(header.group(2)))
            if header.group(1) == "[[":
                key = tuple(parts)
                counts[key] = counts.get(key, -1) + 1
                parts.append(counts[key])
            table = parts
            path: tuple[str | int, ...] = tuple(table)
        else:
            m = _TOML_KEY.match(raw)
            if not m:
                continue
            path = (*table, *_toml_parts(m.group(1)))
        n = _common_prefix(path, loc)
        if n == len(loc) and len(path) == len(loc):
            return number
        if n == len(path) and (best is None or n > best[0]):
            best = (n, number)
    return best[1] if best else None


def _common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _json_line(text: str, loc: Loc) -> int | None:
    """The line of the last key of ``loc`` found by following its string parts in order through ``text``."""
    position, found = 0, None
    for part in loc:
        if isinstance(part, int):
            continue
        m = re.compile(r'"' + re.escape(part) + r'"\s*:').search(text, position)
        if m is None:
            break
        position, found = m.end(), m.start()
    return None if found is None else text.count("\n", 0, found) + 1


def _toml_error_line(message: str) -> int | None:
    m = re.search(r"at line (\d+)", message)
    return int(m.group(1)) if m else None


def _strip_position(message: str) -> str:
    return re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
