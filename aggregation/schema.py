"""Signal schema: the public, versioned layout of a cohort's window table.

A schema is a list of dimensions, each with a closed domain whose last value
is ``other``. A cell is one combination of values; its dense index is
row-major over the dimensions (the first dimension varies slowest). Values
outside a domain map to ``other``, so the set of cells never depends on
private data.

Schema documents (the shipped template ``aggregation/data/schema_template.json``
and every stored or published version) load through typed models: an unknown
or mistyped key is refused with its name and, for a file, its line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, Literal

from fedsignal.v1 import common_pb2
from pydantic import Field, PositiveInt

from aggregation.typed import DataFileError, StrictModel, validate

TEMPLATE = "data/schema_template.json"
OTHER = "other"
MEASURE = "measure"
# The denominator every rate is computed against: one per decision event.
TURNS = "turns"


class SchemaError(ValueError):
    """A schema document or a cell key that does not fit the schema."""


# The defaults of a schema document, written once (the dataclass and the document model use them).
DEFAULT_WINDOW_SECONDS = 3600
DEFAULT_MAX_CELLS_PER_UNIT = 16  # L0
DEFAULT_MAX_COUNT_PER_CELL = 1  # L-infinity
PrivacyUnit = Literal["session", "user"]
DEFAULT_PRIVACY_UNIT: PrivacyUnit = "session"
#: How a cohort's window tables reach the server: "secure" (secure aggregation with distributed
#: noise; every cohort the server creates uses it) or "local" (each tenant sends its own noisy
#: table). A document without the field predates secure aggregation and so is "local".
SECURE = "secure"
LOCAL = "local"
AggregationMode = Literal["secure", "local"]
AGGREGATION_MODES = (SECURE, LOCAL)
DEFAULT_AGGREGATION_MODE = SECURE
LEGACY_AGGREGATION_MODE: AggregationMode = "local"


class DimensionDocument(StrictModel):
    name: str = Field(min_length=1)
    values: list[str] = Field(min_length=1)


class SchemaTemplateDocument(StrictModel):
    """The shipped template: a schema without a cohort."""

    version: PositiveInt
    taxonomy_version: str = Field(min_length=1)
    dimensions: list[DimensionDocument] = Field(min_length=1)
    window_seconds: PositiveInt = DEFAULT_WINDOW_SECONDS
    max_cells_per_unit: PositiveInt = DEFAULT_MAX_CELLS_PER_UNIT
    max_count_per_cell: PositiveInt = DEFAULT_MAX_COUNT_PER_CELL
    privacy_unit: PrivacyUnit = DEFAULT_PRIVACY_UNIT
    aggregation_mode: AggregationMode = LEGACY_AGGREGATION_MODE
    # The noise scale every tenant of the cohort uses (secure: the central sigma; local: each
    # tenant's sigma); 0: not fixed by the schema.
    noise_scale: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)


class SchemaDocument(SchemaTemplateDocument):
    """One cohort's schema version, as stored and published."""

    cohort: str


@dataclass(frozen=True)
class Dimension:
    name: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise SchemaError("dimension name is empty")
        if not self.values or self.values[-1] != OTHER:
            raise SchemaError(f"dimension {self.name!r}: the last value must be {OTHER!r}")
        if len(set(self.values)) != len(self.values):
            raise SchemaError(f"dimension {self.name!r}: duplicate values")

    @cached_property
    def _position(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.values)}

    def index(self, value: str | None) -> int:
        """Index of ``value``; anything outside the domain is ``other``."""
        if value is None:
            return len(self.values) - 1
        return self._position.get(value, len(self.values) - 1)


@dataclass(frozen=True)
class SignalSchema:
    cohort: str
    version: int
    taxonomy_version: str
    dimensions: tuple[Dimension, ...]
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    max_cells_per_unit: int = DEFAULT_MAX_CELLS_PER_UNIT
    max_count_per_cell: int = DEFAULT_MAX_COUNT_PER_CELL
    privacy_unit: str = DEFAULT_PRIVACY_UNIT
    aggregation_mode: str = LEGACY_AGGREGATION_MODE
    # The noise scale every tenant of the cohort uses (secure: the central sigma; local: each
    # tenant's sigma); 0.0: not fixed by the schema.
    noise_scale: float = 0.0
    _strides: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.dimensions or self.dimensions[0].name != MEASURE:
            raise SchemaError(f"the first dimension must be {MEASURE!r}")
        if TURNS not in self.dimensions[0].values:
            raise SchemaError(f"the measure dimension must contain {TURNS!r}")
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise SchemaError("duplicate dimension names")
        if self.window_seconds <= 0:
            raise SchemaError("window_seconds must be positive")
        if self.max_cells_per_unit <= 0 or self.max_count_per_cell <= 0:
            raise SchemaError("contribution bounds must be positive")
        if self.privacy_unit not in ("session", "user"):
            raise SchemaError("privacy_unit must be 'session' or 'user'")
        if self.aggregation_mode not in AGGREGATION_MODES:
            raise SchemaError(f"aggregation_mode must be one of {AGGREGATION_MODES}, got {self.aggregation_mode!r}")
        if not (self.noise_scale >= 0.0 and self.noise_scale < float("inf")):
            raise SchemaError("noise_scale must be a non-negative finite number")
        strides = []
        stride = 1
        for dim in reversed(self.dimensions):
            strides.append(stride)
            stride *= len(dim.values)
        object.__setattr__(self, "_strides", tuple(reversed(strides)))

    # -- layout -------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of cells of the dense table."""
        return self._strides[0] * len(self.dimensions[0].values)

    @property
    def measures(self) -> tuple[str, ...]:
        return self.dimensions[0].values

    @property
    def slice_dimensions(self) -> tuple[Dimension, ...]:
        return self.dimensions[1:]

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise SchemaError(f"unknown dimension {name!r}")

    def cell_index(self, key: Mapping[str, str | None]) -> int:
        """Dense index of the cell a key falls in (missing/unknown values: ``other``)."""
        index = 0
        for dim, stride in zip(self.dimensions, self._strides, strict=True):
            index += dim.index(key.get(dim.name)) * stride
        return index

    def cell_key(self, index: int) -> dict[str, str]:
        """Inverse of :meth:`cell_index`."""
        if not 0 <= index < self.size:
            raise SchemaError(f"cell index {index} outside [0, {self.size})")
        key = {}
        for dim, stride in zip(self.dimensions, self._strides, strict=True):
            key[dim.name] = dim.values[index // stride]
            index %= stride
        return key

    @property
    def slice_count(self) -> int:
        return self._strides[0]

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort,
            "version": self.version,
            "taxonomy_version": self.taxonomy_version,
            "dimensions": [{"name": d.name, "values": list(d.values)} for d in self.dimensions],
            "window_seconds": self.window_seconds,
            "max_cells_per_unit": self.max_cells_per_unit,
            "max_count_per_cell": self.max_count_per_cell,
            "privacy_unit": self.privacy_unit,
            "aggregation_mode": self.aggregation_mode,
            "noise_scale": self.noise_scale,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "signal schema", text: str | None = None
                  ) -> SignalSchema:
        """Validate a schema document; raises :class:`SchemaError` naming each bad key (and line, given ``text``)."""
        typed = _validated(SchemaDocument, doc, source, text)
        return cls(
            cohort=typed.cohort,
            version=typed.version,
            taxonomy_version=typed.taxonomy_version,
            dimensions=tuple(Dimension(d.name, tuple(d.values)) for d in typed.dimensions),
            window_seconds=typed.window_seconds,
            max_cells_per_unit=typed.max_cells_per_unit,
            max_count_per_cell=typed.max_count_per_cell,
            privacy_unit=typed.privacy_unit,
            aggregation_mode=typed.aggregation_mode,
            noise_scale=float(typed.noise_scale),
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "signal schema") -> SignalSchema:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
        try:
            doc = json.loads(decoded)
        except ValueError as exc:
            raise SchemaError(f"{source} is not valid JSON: {exc}") from None
        return cls.from_dict(doc, source=source, text=decoded)

    def to_proto(self) -> common_pb2.SignalSchema:
        return common_pb2.SignalSchema(
            cohort=self.cohort,
            version=self.version,
            taxonomy_version=self.taxonomy_version,
            dimensions=[common_pb2.Dimension(name=d.name, values=list(d.values)) for d in self.dimensions],
            window_seconds=self.window_seconds,
            max_cells_per_unit=self.max_cells_per_unit,
            max_count_per_cell=self.max_count_per_cell,
            privacy_unit=self.privacy_unit,
            aggregation_mode=self.aggregation_mode,
            noise_scale=self.noise_scale,
        )

    @classmethod
    def from_proto(cls, msg: common_pb2.SignalSchema) -> SignalSchema:
        return cls(
            cohort=msg.cohort,
            version=msg.version,
            taxonomy_version=msg.taxonomy_version,
            dimensions=tuple(Dimension(d.name, tuple(d.values)) for d in msg.dimensions),
            window_seconds=msg.window_seconds,
            max_cells_per_unit=msg.max_cells_per_unit,
            max_count_per_cell=msg.max_count_per_cell,
            privacy_unit=msg.privacy_unit or "session",
            aggregation_mode=msg.aggregation_mode or LEGACY_AGGREGATION_MODE,
            noise_scale=msg.noise_scale,
        )

    def with_values(self, dimension: str, values: Sequence[str]) -> SignalSchema:
        """A new schema version whose ``dimension`` has ``values`` (+ ``other``)."""
        vals = tuple(v for v in dict.fromkeys(values) if v != OTHER) + (OTHER,)
        dims = tuple(Dimension(d.name, vals) if d.name == dimension else d for d in self.dimensions)
        if dims == self.dimensions:
            return self
        doc = self.to_dict()
        doc["dimensions"] = [{"name": d.name, "values": list(d.values)} for d in dims]
        doc["version"] = self.version + 1
        return SignalSchema.from_dict(doc)


def _validated(model: type[SchemaTemplateDocument], doc: Any, source: str, text: str | None
               ) -> Any:
    try:
        return validate(model, doc, source=source, text=text, fmt="json")
    except DataFileError as exc:
        raise SchemaError("; ".join(str(exc).splitlines())) from None


def load_template(text: str, source: str = f"aggregation/{TEMPLATE}") -> dict[str, Any]:
    """A schema template document, validated (typo'd or mistyped keys refused with name and line)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"{source} is not valid JSON: {exc}") from None
    return _validated(SchemaTemplateDocument, doc, source, text).model_dump(mode="json")  # type: ignore[no-any-return]


def default_schema_document() -> dict[str, Any]:
    """The shipped template a cohort's first schema version is made from."""
    return load_template(resources.files("aggregation").joinpath(TEMPLATE).read_text())


def default_schema(cohort: str, **overrides: Any) -> SignalSchema:
    doc = default_schema_document()
    doc["cohort"] = cohort
    doc.update(overrides)
    return SignalSchema.from_dict(doc)
