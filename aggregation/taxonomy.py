"""The failure taxonomy: a versioned data file that classifies decision events.

A taxonomy document (``aggregation/data/taxonomy_v1.json`` ships with the
package; a tenant may load its own) lists categories. Each category has a
``name`` from the signal schema's measure domain, a ``kind`` (``failure`` or
``outcome``), the DecisionEvent fields it ``reads`` and a declarative
predicate ``when``. Predicates are compiled once into closures, so
:meth:`Taxonomy.classify` is a handful of attribute reads per category.

Predicate grammar (JSON objects, exactly one form each):

``{"all": [p, ...]}`` / ``{"any": [p, ...]}`` / ``{"not": p}``
    Boolean combinations.
``{"flag": FIELD}``
    A boolean event field is true.
``{"field": FIELD, "in": [str, ...]}``
    A string field (or any element of a string-tuple field such as
    ``finish_reasons``) equals one of the values, case-insensitively.
``{"field": FIELD, "above": x}`` / ``{"field": FIELD, "below": x}``
    A numeric field (e.g. ``latency_ms``) is strictly above / below ``x``.
``{"tool_call_error": "any"}`` / ``{"tool_call_error": [str, ...]}``
    Some tool call failed (with one of the listed error types).
``{"tool_call_mismatch": true}``
    Some tool call names an ``expected`` tool different from the one called.
``{"evaluation": [NAME, ...], "below": x, "above": x, "labels": [str, ...]}``
    Some named evaluation has a score below/above the threshold or a label in
    the list (at least one of ``below``/``above``/``labels``). An evaluation
    value is a number (score), a string (label) or a mapping with ``score``
    and/or ``label``.

The fields a predicate reads are derived from it and must equal the
category's declared ``reads`` — the declaration is checked, not trusted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from aggregation.errors import FedsignalError
from aggregation.events import DecisionEvent
from aggregation.schema import OTHER, TURNS, default_schema_document
from aggregation.typed import DataFileError, StrictModel, validate

TAXONOMY_KIND = "fedsignal.taxonomy"
CATEGORY_KINDS = ("failure", "outcome")


class CategoryDocument(StrictModel):
    """One category of a taxonomy file; ``when`` is the predicate grammar, compiled (and checked) below."""

    name: str
    kind: Literal["failure", "outcome"] = "failure"
    description: str = ""
    reads: list[str]
    when: dict[str, Any]


class TaxonomyDocument(StrictModel):
    """A taxonomy file: unknown or mistyped keys are refused with their name and line."""

    kind: Literal["fedsignal.taxonomy"]
    version: str = Field(min_length=1)
    description: str = ""
    categories: list[CategoryDocument] = Field(min_length=1)

Predicate = Callable[[DecisionEvent], bool]

_EVENT_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(DecisionEvent)}
_BOOL_FIELDS = frozenset(n for n, f in _EVENT_FIELDS.items() if f.type in ("bool", bool))
_STR_FIELDS = frozenset(n for n, f in _EVENT_FIELDS.items() if f.type in ("str | None", "str"))
_STR_TUPLE_FIELDS = frozenset(n for n, f in _EVENT_FIELDS.items() if f.type == "tuple[str, ...]")
_NUMBER_FIELDS = frozenset(
    n for n, f in _EVENT_FIELDS.items() if f.type in ("float | None", "int | None", "float", "int")
)


class TaxonomyError(FedsignalError):
    """A taxonomy document that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class Category:
    name: str
    kind: str
    description: str
    reads: tuple[str, ...]
    predicate: Predicate
    # The validated ``when`` document the predicate was compiled from (None: a hand-made predicate).
    when: Mapping[str, Any] | None = None


class Taxonomy:
    """A loaded, validated taxonomy. Immutable; safe to share between threads."""

    def __init__(self, version: str, categories: Sequence[Category], source: str = "<memory>") -> None:
        self.version = version
        self.source = source
        self._categories = tuple(categories)
        self.categories: tuple[str, ...] = tuple(c.name for c in self._categories)
        self._reads_field: dict[str, bool] = {}  # reads_field's answers (the categories never change)
        self._rules: tuple[tuple[str, Predicate], ...] = tuple(
            (c.name, c.predicate) for c in self._categories
        )
        # One generated function evaluates every category (when all come from ``when`` documents):
        # one call per event instead of a closure call per predicate node.
        fused = _fuse(self._categories)
        if fused is not None:
            self.classify = fused  # type: ignore[method-assign,assignment]

    # -- loading -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Taxonomy:
        """Load and validate a taxonomy file (None: the shipped ``taxonomy_v1.json``)."""
        if path is None:
            source = "aggregation/data/taxonomy_v1.json"
            text = resources.files("aggregation").joinpath("data/taxonomy_v1.json").read_text()
        else:
            source = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise TaxonomyError(f"cannot read taxonomy file {source}: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaxonomyError(f"taxonomy file {source} is not valid JSON: {exc}") from exc
        return cls.from_dict(doc, source=source, text=text)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<memory>", *, text: str | None = None) -> Taxonomy:
        """Validate a parsed taxonomy document (``text``: its JSON source, for line numbers)."""
        try:
            typed = validate(TaxonomyDocument, doc, source=f"taxonomy {source}", text=text, fmt="json")
        except DataFileError as exc:
            raise TaxonomyError("; ".join(str(exc).splitlines())) from None
        allowed = _measure_names()
        seen: set[str] = set()
        categories = []
        for i, entry in enumerate(typed.categories):
            where = f"taxonomy {source}, category #{i}"
            if entry.name not in allowed:
                raise TaxonomyError(
                    f"{where}: name {entry.name!r} is not a measure of the signal schema; use one of {sorted(allowed)}"
                )
            where = f"taxonomy {source}, category {entry.name!r}"
            if entry.name in seen:
                raise TaxonomyError(f"{where}: defined twice")
            seen.add(entry.name)
            reads: set[str] = set()
            predicate = _compile(entry.when, reads, where)
            if set(entry.reads) != reads:
                raise TaxonomyError(
                    f"{where}: 'reads' declares {sorted(set(entry.reads))} but the rule reads {sorted(reads)}"
                )
            categories.append(
                Category(entry.name, entry.kind, entry.description, tuple(sorted(reads)), predicate, entry.when)
            )
        return cls(typed.version, categories, source)

    # -- use -----------------------------------------------------------------
    def category(self, name: str) -> Category:
        for c in self._categories:
            if c.name == name:
                return c
        raise KeyError(name)

    def reads_field(self, name: str) -> bool:
        """Whether some category's rule reads the event field ``name`` (``"tool_calls"`` also
        matches ``tool_calls.error``). A hand-made predicate (no ``when`` document) could read
        anything: it counts as reading every field."""
        known = self._reads_field.get(name)
        if known is None:
            prefix = name + "."
            known = self._reads_field[name] = any(
                c.when is None or name in c.reads or any(r.startswith(prefix) for r in c.reads)
                for c in self._categories
            )
        return known

    def classify(self, event: DecisionEvent) -> frozenset[str]:
        """Every failure category and outcome counter that applies to ``event``."""
        return frozenset([name for name, predicate in self._rules if predicate(event)])

    def __repr__(self) -> str:
        return (
            f"Taxonomy(version={self.version!r}, categories={len(self.categories)}, source={self.source!r})"
        )


def _measure_names() -> frozenset[str]:
    doc = default_schema_document()
    measures = next(d["values"] for d in doc["dimensions"] if d["name"] == "measure")
    return frozenset(m for m in measures if m not in (TURNS, OTHER))


# -- predicate compiler --------------------------------------------------------


def _strings(value: Any, where: str, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TaxonomyError(f"{where}: {key!r} must be a non-empty list of strings")
    return frozenset(v.casefold() for v in value)


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaxonomyError(f"{where}: {key!r} must be a number")
    return float(value)


def _compile(spec: Any, reads: set[str], where: str) -> Predicate:
    if not isinstance(spec, Mapping):
        raise TaxonomyError(f"{where}: a predicate must be an object, got {spec!r}")
    if "all" in spec or "any" in spec:
        op = "all" if "all" in spec else "any"
        items = spec[op]
        if not isinstance(items, list) or not items or len(spec) != 1:
            raise TaxonomyError(f"{where}: {op!r} takes a non-empty list and nothing else")
        parts = tuple(_compile(p, reads, where) for p in items)
        return _all(parts) if op == "all" else _any(parts)
    if "not" in spec:
        if len(spec) != 1:
            raise TaxonomyError(f"{where}: 'not' takes one predicate and nothing else")
        inner = _compile(spec["not"], reads, where)
        return lambda e: not inner(e)
    if "flag" in spec:
        name = spec["flag"]
        if name not in _BOOL_FIELDS or len(spec) != 1:
            raise TaxonomyError(
                f"{where}: 'flag' needs one boolean event field, one of {sorted(_BOOL_FIELDS)}"
            )
        reads.add(name)
        return lambda e: getattr(e, name) is True
    if "field" in spec:
        return _compile_field(spec, reads, where)
    # The tool-call predicates below are loops, not any(<generator>): creating
    # the generator cost more than the one or two calls an event usually has.
    if "tool_call_error" in spec:
        arg = spec["tool_call_error"]
        reads.add("tool_calls.error")
        if arg == "any":

            def some_call_failed(e: DecisionEvent) -> bool:
                for c in e.tool_calls:  # noqa: SIM110 (see above)
                    if c.error is not None:
                        return True
                return False

            return some_call_failed
        errors = _strings(arg, where, "tool_call_error")

        def some_call_failed_with(e: DecisionEvent) -> bool:
            for c in e.tool_calls:  # noqa: SIM110 (see above)
                if c.error is not None and c.error.casefold() in errors:
                    return True
            return False

        return some_call_failed_with
    if "tool_call_mismatch" in spec:
        if spec["tool_call_mismatch"] is not True:
            raise TaxonomyError(f"{where}: 'tool_call_mismatch' must be true")
        reads.update(("tool_calls.name", "tool_calls.expected"))

        def some_call_mismatched(e: DecisionEvent) -> bool:
            for c in e.tool_calls:  # noqa: SIM110 (see above)
                if c.expected is not None and c.expected != c.name:
                    return True
            return False

        return some_call_mismatched
    if "evaluation" in spec:
        return _compile_evaluation(spec, reads, where)
    raise TaxonomyError(f"{where}: unknown predicate {dict(spec)!r}")


# Unrolled for the usual two or three parts: a generator per event costs more
# than the predicates themselves.
def _any(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda e: a(e) or b(e)
    if len(parts) == 3:
        a, b, c = parts
        return lambda e: a(e) or b(e) or c(e)
    return lambda e: any(p(e) for p in parts)


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda e: a(e) and b(e)
    return lambda e: all(p(e) for p in parts)


def _compile_field(spec: Mapping[str, Any], reads: set[str], where: str) -> Predicate:
    name = spec["field"]
    if name not in _EVENT_FIELDS:
        raise TaxonomyError(f"{where}: {name!r} is not a DecisionEvent field")
    reads.add(name)
    if "in" in spec:
        values = _strings(spec["in"], where, "in")
        if name in _STR_FIELDS:
            return lambda e: (v := getattr(e, name)) is not None and v.casefold() in values
        if name in _STR_TUPLE_FIELDS:

            def some_value_in(e: DecisionEvent) -> bool:
                for v in getattr(e, name):  # noqa: SIM110 (a loop, as for tool calls)
                    if v.casefold() in values:
                        return True
                return False

            return some_value_in
        raise TaxonomyError(f"{where}: 'in' needs a text field, {name!r} is not one")
    if name not in _NUMBER_FIELDS:
        raise TaxonomyError(f"{where}: {name!r} needs 'in' (text) — only numeric fields take 'above'/'below'")
    if "above" in spec:
        limit = _number(spec["above"], where, "above")
        return lambda e: (v := getattr(e, name)) is not None and v > limit
    if "below" in spec:
        limit = _number(spec["below"], where, "below")
        return lambda e: (v := getattr(e, name)) is not None and v < limit
    raise TaxonomyError(f"{where}: field predicate on {name!r} needs 'in', 'above' or 'below'")


def _compile_evaluation(spec: Mapping[str, Any], reads: set[str], where: str) -> Predicate:
    names = spec["evaluation"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise TaxonomyError(f"{where}: 'evaluation' must list evaluator names")
    unknown = set(spec) - {"evaluation", "below", "above", "labels"}
    if unknown:
        raise TaxonomyError(f"{where}: unknown keys {sorted(unknown)} in an evaluation predicate")
    below = _number(spec["below"], where, "below") if "below" in spec else None
    above = _number(spec["above"], where, "above") if "above" in spec else None
    labels = _strings(spec["labels"], where, "labels") if "labels" in spec else frozenset()
    if below is None and above is None and not labels:
        raise TaxonomyError(f"{where}: an evaluation predicate needs 'below', 'above' or 'labels'")
    reads.update(f"evaluations.{n}" for n in names)
    keys = tuple(names)

    def score_hits(score: Any) -> bool:
        if isinstance(score, bool) or not isinstance(score, int | float):
            return False
        return (below is not None and score < below) or (above is not None and score > above)

    def hits(value: Any) -> bool:
        if isinstance(value, str):
            return value.casefold() in labels
        if isinstance(value, Mapping):
            label = value.get("label")
            return score_hits(value.get("score")) or (isinstance(label, str) and label.casefold() in labels)
        return score_hits(value)

    def predicate(e: DecisionEvent) -> bool:
        evals = e.evaluations
        if not evals:
            return False
        for key in keys:
            value = evals.get(key)
            if value is None:
                continue
            # A float score (what ingest stores for every numeric result) is
            # compared inline; anything else goes through hits().
            if type(value) is float:
                if (below is not None and value < below) or (above is not None and value > above):
                    return True
            elif hits(value):
                return True
        return False

    return predicate


# -- the fused classifier ------------------------------------------------------
#
# The predicates above are closures: one Python call per node of every category's
# rule, ~25 calls per event for the shipped taxonomy (a fifth of the record path).
# ``_fuse`` turns the same validated ``when`` documents into the source of ONE
# function over the event: field reads are attribute loads, ``any``/``all``/``not``
# are ``or``/``and``/``not``, and every constant (value sets, thresholds, evaluator
# names) is a global of the generated function, never text in its source — only
# validated DecisionEvent field names (identifiers) appear in the source. Hits are a
# bit mask; each distinct mask's frozenset is built once. tests/aggregation/
# test_taxonomy_fused.py checks it against the closures on generated events.


def _fuse(categories: Sequence[Category]) -> Callable[[DecisionEvent], frozenset[str]] | None:
    if not categories or any(c.when is None for c in categories):
        return None
    consts: dict[str, Any] = {
        "_evaluation_value_hit": _evaluation_value_hit,
        "_some_value_in": _some_value_in,
        "_some_call_failed": _some_call_failed,
        "_some_call_failed_with": _some_call_failed_with,
        "_some_call_mismatched": _some_call_mismatched,
    }
    lines = ["def classify(e):", "    evals = e.evaluations", "    calls = e.tool_calls", "    m = 0"]
    for bit, category in enumerate(categories):
        assert category.when is not None
        lines.append(f"    if {_expr(category.when, consts)}:")
        lines.append(f"        m |= {1 << bit}")
    lines += [
        "    hit = _masks.get(m)",
        "    if hit is None:",
        "        hit = _masks[m] = frozenset([n for b, n in _names if m & b])",
        "    return hit",
    ]
    consts["_masks"] = {}
    consts["_names"] = tuple((1 << bit, c.name) for bit, c in enumerate(categories))
    namespace: dict[str, Any] = dict(consts)
    exec(compile("\n".join(lines), "<fused taxonomy>", "exec"), namespace)  # noqa: S102 (source built above)
    fn: Callable[[DecisionEvent], frozenset[str]] = namespace["classify"]
    fn.__doc__ = Taxonomy.classify.__doc__
    return fn


def _const(consts: dict[str, Any], value: Any) -> str:
    name = f"_c{len(consts)}"
    consts[name] = value
    return name


def _expr(spec: Mapping[str, Any], consts: dict[str, Any]) -> str:
    """Python source of one predicate already checked by :func:`_compile`."""
    if "all" in spec:
        return "(" + " and ".join(_expr(p, consts) for p in spec["all"]) + ")"
    if "any" in spec:
        return "(" + " or ".join(_expr(p, consts) for p in spec["any"]) + ")"
    if "not" in spec:
        return f"(not {_expr(spec['not'], consts)})"
    if "flag" in spec:
        return f"(e.{_field(spec['flag'])} is True)"
    if "field" in spec:
        name = _field(spec["field"])
        if "in" in spec:
            values = _const(consts, frozenset(v.casefold() for v in spec["in"]))
            if name in _STR_FIELDS:
                return f"((v := e.{name}) is not None and v.casefold() in {values})"
            return f"(bool(v := e.{name}) and _some_value_in(v, {values}))"
        op, key = (">", "above") if "above" in spec else ("<", "below")
        return f"((v := e.{name}) is not None and v {op} {_const(consts, float(spec[key]))})"
    if "tool_call_error" in spec:
        arg = spec["tool_call_error"]
        if arg == "any":
            return "(bool(calls) and _some_call_failed(calls))"
        errors = _const(consts, frozenset(v.casefold() for v in arg))
        return f"(bool(calls) and _some_call_failed_with(calls, {errors}))"
    if "tool_call_mismatch" in spec:
        return "(bool(calls) and _some_call_mismatched(calls))"
    # "evaluation" (the only form left after _compile)
    below = float(spec["below"]) if "below" in spec else None
    above = float(spec["above"]) if "above" in spec else None
    labels = frozenset(v.casefold() for v in spec.get("labels", ()))
    # Per evaluator: a float score (what ingest stores for every numeric result) is compared inline.
    tests = []
    if below is not None:
        tests.append(f"x < {_const(consts, below)}")
    if above is not None:
        tests.append(f"x > {_const(consts, above)}")
    inline = " or ".join(tests) or "False"
    other = _const(consts, (below, above, labels))
    parts = [
        f"((x := evals.get({_const(consts, key)})) is not None"
        f" and (({inline}) if type(x) is float else _evaluation_value_hit(x, *{other})))"
        for key in spec["evaluation"]
    ]
    return "(bool(evals) and (" + " or ".join(parts) + "))"


def _field(name: str) -> str:
    if name not in _EVENT_FIELDS or not name.isidentifier():  # checked by _compile; never text into the source
        raise TaxonomyError(f"{name!r} is not a DecisionEvent field")
    return name


# Loops, not any(<generator>): an event usually has one or two calls (see _compile).
def _some_value_in(values: Sequence[str], wanted: frozenset[str]) -> bool:
    for v in values:  # noqa: SIM110
        if v.casefold() in wanted:
            return True
    return False


def _some_call_failed(calls: Sequence[Any]) -> bool:
    for c in calls:  # noqa: SIM110
        if c.error is not None:
            return True
    return False


def _some_call_failed_with(calls: Sequence[Any], errors: frozenset[str]) -> bool:
    for c in calls:  # noqa: SIM110
        if c.error is not None and c.error.casefold() in errors:
            return True
    return False


def _some_call_mismatched(calls: Sequence[Any]) -> bool:
    for c in calls:  # noqa: SIM110
        if c.expected is not None and c.expected != c.name:
            return True
    return False


def _evaluation_value_hit(value: Any, below: float | None, above: float | None, labels: frozenset[str]) -> bool:
    """The ``evaluation`` predicate on one evaluator's value that is not a float (as :func:`_compile_evaluation`)."""
    if isinstance(value, str):
        return value.casefold() in labels
    if isinstance(value, Mapping):
        label = value.get("label")
        return _score_hits(value.get("score"), below, above) or (isinstance(label, str) and label.casefold() in labels)
    return _score_hits(value, below, above)


def _score_hits(score: Any, below: float | None, above: float | None) -> bool:
    if isinstance(score, bool) or not isinstance(score, int | float):
        return False
    return (below is not None and score < below) or (above is not None and score > above)
