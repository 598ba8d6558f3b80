from fedsignal.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSignalSchemaRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SubmitReportResponse(_message.Message):
    __slots__ = ("outcome", "report_id")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[SubmitReportResponse.Outcome]
        ACCEPTED: _ClassVar[SubmitReportResponse.Outcome]
        DUPLICATE: _ClassVar[SubmitReportResponse.Outcome]
    OUTCOME_UNSPECIFIED: SubmitReportResponse.Outcome
    ACCEPTED: SubmitReportResponse.Outcome
    DUPLICATE: SubmitReportResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    outcome: SubmitReportResponse.Outcome
    report_id: str
    def __init__(self, outcome: _Optional[_Union[SubmitReportResponse.Outcome, str]] = ..., report_id: _Optional[str] = ...) -> None: ...
