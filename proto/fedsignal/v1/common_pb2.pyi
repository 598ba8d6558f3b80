from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MECHANISM_UNSPECIFIED: _ClassVar[Mechanism]
    DISCRETE_GAUSSIAN: _ClassVar[Mechanism]
    DISCRETE_LAPLACE: _ClassVar[Mechanism]
MECHANISM_UNSPECIFIED: Mechanism
DISCRETE_GAUSSIAN: Mechanism
DISCRETE_LAPLACE: Mechanism

class Dimension(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class SignalSchema(_message.Message):
    __slots__ = ("cohort", "version", "taxonomy_version", "dimensions", "window_seconds", "max_cells_per_unit", "max_count_per_cell", "privacy_unit", "aggregation_mode", "noise_scale")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CELLS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_PER_CELL_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_UNIT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_MODE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    version: int
    taxonomy_version: str
    dimensions: _containers.RepeatedCompositeFieldContainer[Dimension]
    window_seconds: int
    max_cells_per_unit: int
    max_count_per_cell: int
    privacy_unit: str
    aggregation_mode: str
    noise_scale: float
    def __init__(self, cohort: _Optional[str] = ..., version: _Optional[int] = ..., taxonomy_version: _Optional[str] = ..., dimensions: _Optional[_Iterable[_Union[Dimension, _Mapping]]] = ..., window_seconds: _Optional[int] = ..., max_cells_per_unit: _Optional[int] = ..., max_count_per_cell: _Optional[int] = ..., privacy_unit: _Optional[str] = ..., aggregation_mode: _Optional[str] = ..., noise_scale: _Optional[float] = ...) -> None: ...

class PrivacyLoss(_message.Message):
    __slots__ = ("rho", "epsilon", "delta")
    RHO_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    rho: float
    epsilon: float
    delta: float
    def __init__(self, rho: _Optional[float] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ...) -> None: ...

class DpReport(_message.Message):
    __slots__ = ("idempotency_key", "tenant_id", "cohort", "schema_version", "taxonomy_version", "window_start", "window_end", "mechanism", "noise_scale", "sensitivity", "max_cells_per_unit", "max_count_per_cell", "privacy_loss", "cells", "collector_version")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAXONOMY_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    MAX_CELLS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_PER_CELL_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_LOSS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    tenant_id: str
    cohort: str
    schema_version: int
    taxonomy_version: str
    window_start: int
    window_end: int
    mechanism: Mechanism
    noise_scale: float
    sensitivity: float
    max_cells_per_unit: int
    max_count_per_cell: int
    privacy_loss: PrivacyLoss
    cells: _containers.RepeatedScalarFieldContainer[int]
    collector_version: str
    def __init__(self, idempotency_key: _Optional[str] = ..., tenant_id: _Optional[str] = ..., cohort: _Optional[str] = ..., schema_version: _Optional[int] = ..., taxonomy_version: _Optional[str] = ..., window_start: _Optional[int] = ..., window_end: _Optional[int] = ..., mechanism: _Optional[_Union[Mechanism, str]] = ..., noise_scale: _Optional[float] = ..., sensitivity: _Optional[float] = ..., max_cells_per_unit: _Optional[int] = ..., max_count_per_cell: _Optional[int] = ..., privacy_loss: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., cells: _Optional[_Iterable[int]] = ..., collector_version: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at", "actor", "kind", "payload_json", "prev_hash", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: str
    actor: str
    kind: str
    payload_json: str
    prev_hash: str
    hash: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[str] = ..., actor: _Optional[str] = ..., kind: _Optional[str] = ..., payload_json: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...
