from fedsignal.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateEnrollmentTokenRequest(_message.Message):
    __slots__ = ("tenant_id", "cohort", "ttl_seconds")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    cohort: str
    ttl_seconds: int
    def __init__(self, tenant_id: _Optional[str] = ..., cohort: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateEnrollmentTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: str
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class RevokeTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTenantResponse(_message.Message):
    __slots__ = ("certificates_revoked",)
    CERTIFICATES_REVOKED_FIELD_NUMBER: _ClassVar[int]
    certificates_revoked: int
    def __init__(self, certificates_revoked: _Optional[int] = ...) -> None: ...

class ListSignalsRequest(_message.Message):
    __slots__ = ("cohort", "window_start_from", "limit", "include_suppressed", "offset")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FROM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    window_start_from: int
    limit: int
    include_suppressed: bool
    offset: int
    def __init__(self, cohort: _Optional[str] = ..., window_start_from: _Optional[int] = ..., limit: _Optional[int] = ..., include_suppressed: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class MergedCell(_message.Message):
    __slots__ = ("cohort", "window_start", "window_end", "measure", "slice", "estimate", "variance", "rate", "rate_low", "rate_high", "tenants", "suppressed", "z_score")
    class SliceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COHORT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    MEASURE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    RATE_LOW_FIELD_NUMBER: _ClassVar[int]
    RATE_HIGH_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    Z_SCORE_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    window_start: int
    window_end: int
    measure: str
    slice: _containers.ScalarMap[str, str]
    estimate: float
    variance: float
    rate: float
    rate_low: float
    rate_high: float
    tenants: int
    suppressed: bool
    z_score: float
    def __init__(self, cohort: _Optional[str] = ..., window_start: _Optional[int] = ..., window_end: _Optional[int] = ..., measure: _Optional[str] = ..., slice: _Optional[_Mapping[str, str]] = ..., estimate: _Optional[float] = ..., variance: _Optional[float] = ..., rate: _Optional[float] = ..., rate_low: _Optional[float] = ..., rate_high: _Optional[float] = ..., tenants: _Optional[int] = ..., suppressed: _Optional[bool] = ..., z_score: _Optional[float] = ...) -> None: ...

class ListSignalsResponse(_message.Message):
    __slots__ = ("cells", "min_tenants", "next_offset")
    CELLS_FIELD_NUMBER: _ClassVar[int]
    MIN_TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[MergedCell]
    min_tenants: int
    next_offset: int
    def __init__(self, cells: _Optional[_Iterable[_Union[MergedCell, _Mapping]]] = ..., min_tenants: _Optional[int] = ..., next_offset: _Optional[int] = ...) -> None: ...

class GetAuditLogRequest(_message.Message):
    __slots__ = ("after_seq", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetAuditLogResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.AuditEntry, _Mapping]]] = ...) -> None: ...

class SignedAuditHead(_message.Message):
    __slots__ = ("seq", "hash", "at", "keyid", "signature")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KEYID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    at: str
    keyid: str
    signature: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ..., at: _Optional[str] = ..., keyid: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class GetAuditHeadRequest(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bool
    def __init__(self, checkpoint: _Optional[bool] = ...) -> None: ...

class GetAuditHeadResponse(_message.Message):
    __slots__ = ("heads", "public_key", "verified", "problem")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[SignedAuditHead]
    public_key: str
    verified: bool
    problem: str
    def __init__(self, heads: _Optional[_Iterable[_Union[SignedAuditHead, _Mapping]]] = ..., public_key: _Optional[str] = ..., verified: _Optional[bool] = ..., problem: _Optional[str] = ...) -> None: ...
