from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_PHASE_UNSPECIFIED: _ClassVar[RoundPhase]
    COLLECTING: _ClassVar[RoundPhase]
    UNMASKING: _ClassVar[RoundPhase]
    DONE: _ClassVar[RoundPhase]
    ABORTED: _ClassVar[RoundPhase]
ROUND_PHASE_UNSPECIFIED: RoundPhase
COLLECTING: RoundPhase
UNMASKING: RoundPhase
DONE: RoundPhase
ABORTED: RoundPhase

class SetAggregationModeRequest(_message.Message):
    __slots__ = ("cohort", "mode", "noise_scale", "reason")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    mode: str
    noise_scale: float
    reason: str
    def __init__(self, cohort: _Optional[str] = ..., mode: _Optional[str] = ..., noise_scale: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class SetAggregationModeResponse(_message.Message):
    __slots__ = ("schema_version", "mode", "noise_scale", "changed")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    mode: str
    noise_scale: float
    changed: bool
    def __init__(self, schema_version: _Optional[int] = ..., mode: _Optional[str] = ..., noise_scale: _Optional[float] = ..., changed: _Optional[bool] = ...) -> None: ...

class RegisterMaskingKeyRequest(_message.Message):
    __slots__ = ("public_key", "signature")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    signature: bytes
    def __init__(self, public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class RegisterMaskingKeyResponse(_message.Message):
    __slots__ = ("outcome",)
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[RegisterMaskingKeyResponse.Outcome]
        REGISTERED: _ClassVar[RegisterMaskingKeyResponse.Outcome]
        UNCHANGED: _ClassVar[RegisterMaskingKeyResponse.Outcome]
        REPLACED: _ClassVar[RegisterMaskingKeyResponse.Outcome]
    OUTCOME_UNSPECIFIED: RegisterMaskingKeyResponse.Outcome
    REGISTERED: RegisterMaskingKeyResponse.Outcome
    UNCHANGED: RegisterMaskingKeyResponse.Outcome
    REPLACED: RegisterMaskingKeyResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: RegisterMaskingKeyResponse.Outcome
    def __init__(self, outcome: _Optional[_Union[RegisterMaskingKeyResponse.Outcome, str]] = ...) -> None: ...

class RosterStatement(_message.Message):
    __slots__ = ("cohort", "tenant_id", "public_key")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    tenant_id: str
    public_key: bytes
    def __init__(self, cohort: _Optional[str] = ..., tenant_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class RosterEntry(_message.Message):
    __slots__ = ("tenant_id", "public_key", "signature", "certificate_pem")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    public_key: bytes
    signature: bytes
    certificate_pem: bytes
    def __init__(self, tenant_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate_pem: _Optional[bytes] = ...) -> None: ...

class GetRosterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Roster(_message.Message):
    __slots__ = ("cohort", "entries")
    COHORT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    cohort: str
    entries: _containers.RepeatedCompositeFieldContainer[RosterEntry]
    def __init__(self, cohort: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[RosterEntry, _Mapping]]] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("window_start", "schema_version", "omit_roster", "roster_digest")
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    OMIT_ROSTER_FIELD_NUMBER: _ClassVar[int]
    ROSTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    window_start: int
    schema_version: int
    omit_roster: bool
    roster_digest: bytes
    def __init__(self, window_start: _Optional[int] = ..., schema_version: _Optional[int] = ..., omit_roster: _Optional[bool] = ..., roster_digest: _Optional[bytes] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("round_id", "context", "roster", "phase", "submit_deadline", "sigma_central", "delta", "window_end", "context_header")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    SIGMA_CENTRAL_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_HEADER_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    context: bytes
    roster: _containers.RepeatedCompositeFieldContainer[RosterEntry]
    phase: RoundPhase
    submit_deadline: float
    sigma_central: float
    delta: float
    window_end: int
    context_header: bytes
    def __init__(self, round_id: _Optional[str] = ..., context: _Optional[bytes] = ..., roster: _Optional[_Iterable[_Union[RosterEntry, _Mapping]]] = ..., phase: _Optional[_Union[RoundPhase, str]] = ..., submit_deadline: _Optional[float] = ..., sigma_central: _Optional[float] = ..., delta: _Optional[float] = ..., window_end: _Optional[int] = ..., context_header: _Optional[bytes] = ...) -> None: ...

class RoundRef(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class UnmaskQuery(_message.Message):
    __slots__ = ("round_id", "omit_request", "omit_attestations")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    OMIT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    OMIT_ATTESTATIONS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    omit_request: bool
    omit_attestations: bool
    def __init__(self, round_id: _Optional[str] = ..., omit_request: _Optional[bool] = ..., omit_attestations: _Optional[bool] = ...) -> None: ...

class SubmitMaskedInputRequest(_message.Message):
    __slots__ = ("round_id", "masked_input")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    masked_input: bytes
    def __init__(self, round_id: _Optional[str] = ..., masked_input: _Optional[bytes] = ...) -> None: ...

class SubmitMaskedInputResponse(_message.Message):
    __slots__ = ("outcome",)
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[SubmitMaskedInputResponse.Outcome]
        ACCEPTED: _ClassVar[SubmitMaskedInputResponse.Outcome]
        DUPLICATE: _ClassVar[SubmitMaskedInputResponse.Outcome]
    OUTCOME_UNSPECIFIED: SubmitMaskedInputResponse.Outcome
    ACCEPTED: SubmitMaskedInputResponse.Outcome
    DUPLICATE: SubmitMaskedInputResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: SubmitMaskedInputResponse.Outcome
    def __init__(self, outcome: _Optional[_Union[SubmitMaskedInputResponse.Outcome, str]] = ...) -> None: ...

class UnmaskRequestInfo(_message.Message):
    __slots__ = ("phase", "unmask_request", "attestations", "survivors", "threshold")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ATTESTATIONS_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    phase: RoundPhase
    unmask_request: bytes
    attestations: bytes
    survivors: int
    threshold: int
    def __init__(self, phase: _Optional[_Union[RoundPhase, str]] = ..., unmask_request: _Optional[bytes] = ..., attestations: _Optional[bytes] = ..., survivors: _Optional[int] = ..., threshold: _Optional[int] = ...) -> None: ...

class SubmitAttestationRequest(_message.Message):
    __slots__ = ("round_id", "attestation")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    attestation: bytes
    def __init__(self, round_id: _Optional[str] = ..., attestation: _Optional[bytes] = ...) -> None: ...

class SubmitAttestationResponse(_message.Message):
    __slots__ = ("attestations", "threshold")
    ATTESTATIONS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    attestations: bytes
    threshold: int
    def __init__(self, attestations: _Optional[bytes] = ..., threshold: _Optional[int] = ...) -> None: ...

class SubmitUnmaskResponseRequest(_message.Message):
    __slots__ = ("round_id", "unmask_response")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    UNMASK_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    unmask_response: bytes
    def __init__(self, round_id: _Optional[str] = ..., unmask_response: _Optional[bytes] = ...) -> None: ...

class SubmitUnmaskResponseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RoundStatus(_message.Message):
    __slots__ = ("round_id", "cohort", "window_start", "phase", "roster_size", "threshold", "inputs", "survivors", "attestations", "responses", "abort_reason")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROSTER_SIZE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    ATTESTATIONS_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    ABORT_REASON_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    cohort: str
    window_start: int
    phase: RoundPhase
    roster_size: int
    threshold: int
    inputs: int
    survivors: int
    attestations: int
    responses: int
    abort_reason: str
    def __init__(self, round_id: _Optional[str] = ..., cohort: _Optional[str] = ..., window_start: _Optional[int] = ..., phase: _Optional[_Union[RoundPhase, str]] = ..., roster_size: _Optional[int] = ..., threshold: _Optional[int] = ..., inputs: _Optional[int] = ..., survivors: _Optional[int] = ..., attestations: _Optional[int] = ..., responses: _Optional[int] = ..., abort_reason: _Optional[str] = ...) -> None: ...
