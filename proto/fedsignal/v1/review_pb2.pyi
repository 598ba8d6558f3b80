from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactSpec(_message.Message):
    __slots__ = ("name", "kind", "content", "sha256", "length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    content: bytes
    sha256: str
    length: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., content: _Optional[bytes] = ..., sha256: _Optional[str] = ..., length: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "cohort", "state", "category", "risk_class", "artifacts", "evidence_json", "rollout_plan_json", "signing_payload", "signed_by", "threshold", "created_at", "bundle_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    RISK_CLASS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    cohort: str
    state: str
    category: str
    risk_class: str
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactSpec]
    evidence_json: str
    rollout_plan_json: str
    signing_payload: bytes
    signed_by: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    created_at: str
    bundle_version: int
    def __init__(self, id: _Optional[str] = ..., cohort: _Optional[str] = ..., state: _Optional[str] = ..., category: _Optional[str] = ..., risk_class: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactSpec, _Mapping]]] = ..., evidence_json: _Optional[str] = ..., rollout_plan_json: _Optional[str] = ..., signing_payload: _Optional[bytes] = ..., signed_by: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ..., created_at: _Optional[str] = ..., bundle_version: _Optional[int] = ...) -> None: ...

class ListCandidatesRequest(_message.Message):
    __slots__ = ("state", "cohort")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    state: str
    cohort: str
    def __init__(self, state: _Optional[str] = ..., cohort: _Optional[str] = ...) -> None: ...

class ListCandidatesResponse(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class GetCandidateRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class EditCandidateRequest(_message.Message):
    __slots__ = ("id", "artifacts", "rollout_plan_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactSpec]
    rollout_plan_json: str
    def __init__(self, id: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactSpec, _Mapping]]] = ..., rollout_plan_json: _Optional[str] = ...) -> None: ...

class ApproveCandidateRequest(_message.Message):
    __slots__ = ("id", "keyid", "signature", "signing_payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEYID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    keyid: str
    signature: bytes
    signing_payload: bytes
    def __init__(self, id: _Optional[str] = ..., keyid: _Optional[str] = ..., signature: _Optional[bytes] = ..., signing_payload: _Optional[bytes] = ...) -> None: ...

class RejectCandidateRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetTrustRootRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetTrustRootResponse(_message.Message):
    __slots__ = ("root", "version")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    root: bytes
    version: int
    def __init__(self, root: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class RotateTrustRootRequest(_message.Message):
    __slots__ = ("root",)
    ROOT_FIELD_NUMBER: _ClassVar[int]
    root: bytes
    def __init__(self, root: _Optional[bytes] = ...) -> None: ...
