from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRolloutRequest(_message.Message):
    __slots__ = ("candidate_id",)
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    def __init__(self, candidate_id: _Optional[str] = ...) -> None: ...

class RolloutRef(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GateStatus(_message.Message):
    __slots__ = ("gate", "direction", "margin", "estimate", "low", "high", "verdict")
    GATE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    gate: str
    direction: str
    margin: float
    estimate: float
    low: float
    high: float
    verdict: str
    def __init__(self, gate: _Optional[str] = ..., direction: _Optional[str] = ..., margin: _Optional[float] = ..., estimate: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., verdict: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("rollout_id", "candidate_id", "cohort", "state", "stage_index", "stage_percent", "canary_tenants", "gates", "next_decision", "bundle_version", "windows_in_stage")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    STAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CANARY_TENANTS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_DECISION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_IN_STAGE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    candidate_id: str
    cohort: str
    state: str
    stage_index: int
    stage_percent: float
    canary_tenants: _containers.RepeatedScalarFieldContainer[str]
    gates: _containers.RepeatedCompositeFieldContainer[GateStatus]
    next_decision: str
    bundle_version: int
    windows_in_stage: int
    def __init__(self, rollout_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., cohort: _Optional[str] = ..., state: _Optional[str] = ..., stage_index: _Optional[int] = ..., stage_percent: _Optional[float] = ..., canary_tenants: _Optional[_Iterable[str]] = ..., gates: _Optional[_Iterable[_Union[GateStatus, _Mapping]]] = ..., next_decision: _Optional[str] = ..., bundle_version: _Optional[int] = ..., windows_in_stage: _Optional[int] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutStatus]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[RolloutStatus, _Mapping]]] = ...) -> None: ...
