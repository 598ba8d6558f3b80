from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetBundleRequest(_message.Message):
    __slots__ = ("installed_version", "root_version")
    INSTALLED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    installed_version: int
    root_version: int
    def __init__(self, installed_version: _Optional[int] = ..., root_version: _Optional[int] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: bytes
    def __init__(self, name: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class GetBundleResponse(_message.Message):
    __slots__ = ("up_to_date", "root_chain", "bundle_metadata", "artifacts")
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    ROOT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_METADATA_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    up_to_date: bool
    root_chain: _containers.RepeatedScalarFieldContainer[bytes]
    bundle_metadata: bytes
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    def __init__(self, up_to_date: _Optional[bool] = ..., root_chain: _Optional[_Iterable[bytes]] = ..., bundle_metadata: _Optional[bytes] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("active_version", "previous_version", "healthy", "detail")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    active_version: int
    previous_version: int
    healthy: bool
    detail: str
    def __init__(self, active_version: _Optional[int] = ..., previous_version: _Optional[int] = ..., healthy: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
