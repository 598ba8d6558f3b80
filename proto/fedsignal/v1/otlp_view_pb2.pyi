from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OtlpViewTraces(_message.Message):
    __slots__ = ("resource_spans",)
    RESOURCE_SPANS_FIELD_NUMBER: _ClassVar[int]
    resource_spans: _containers.RepeatedCompositeFieldContainer[OtlpViewResourceSpans]
    def __init__(self, resource_spans: _Optional[_Iterable[_Union[OtlpViewResourceSpans, _Mapping]]] = ...) -> None: ...

class OtlpViewResourceSpans(_message.Message):
    __slots__ = ("resource", "scope_spans")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_SPANS_FIELD_NUMBER: _ClassVar[int]
    resource: OtlpViewResource
    scope_spans: _containers.RepeatedCompositeFieldContainer[OtlpViewScopeSpans]
    def __init__(self, resource: _Optional[_Union[OtlpViewResource, _Mapping]] = ..., scope_spans: _Optional[_Iterable[_Union[OtlpViewScopeSpans, _Mapping]]] = ...) -> None: ...

class OtlpViewResource(_message.Message):
    __slots__ = ("attributes",)
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OtlpViewAnyValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OtlpViewAnyValue, _Mapping]] = ...) -> None: ...
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.MessageMap[str, OtlpViewAnyValue]
    def __init__(self, attributes: _Optional[_Mapping[str, OtlpViewAnyValue]] = ...) -> None: ...

class OtlpViewScopeSpans(_message.Message):
    __slots__ = ("spans",)
    SPANS_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[OtlpViewSpan]
    def __init__(self, spans: _Optional[_Iterable[_Union[OtlpViewSpan, _Mapping]]] = ...) -> None: ...

class OtlpViewSpan(_message.Message):
    __slots__ = ("trace_id", "span_id", "parent_span_id", "start_time_unix_nano", "end_time_unix_nano", "attributes", "events", "status", "flags")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OtlpViewAnyValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OtlpViewAnyValue, _Mapping]] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    END_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: _containers.MessageMap[str, OtlpViewAnyValue]
    events: _containers.RepeatedCompositeFieldContainer[OtlpViewEvent]
    status: OtlpViewStatus
    flags: int
    def __init__(self, trace_id: _Optional[bytes] = ..., span_id: _Optional[bytes] = ..., parent_span_id: _Optional[bytes] = ..., start_time_unix_nano: _Optional[int] = ..., end_time_unix_nano: _Optional[int] = ..., attributes: _Optional[_Mapping[str, OtlpViewAnyValue]] = ..., events: _Optional[_Iterable[_Union[OtlpViewEvent, _Mapping]]] = ..., status: _Optional[_Union[OtlpViewStatus, _Mapping]] = ..., flags: _Optional[int] = ...) -> None: ...

class OtlpViewEvent(_message.Message):
    __slots__ = ("name", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OtlpViewAnyValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OtlpViewAnyValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    attributes: _containers.MessageMap[str, OtlpViewAnyValue]
    def __init__(self, name: _Optional[str] = ..., attributes: _Optional[_Mapping[str, OtlpViewAnyValue]] = ...) -> None: ...

class OtlpViewStatus(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: int
    def __init__(self, code: _Optional[int] = ...) -> None: ...

class OtlpViewAnyValue(_message.Message):
    __slots__ = ("string_value", "bool_value", "int_value", "double_value", "array_value", "kvlist_value", "bytes_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_VALUE_FIELD_NUMBER: _ClassVar[int]
    KVLIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    bool_value: bool
    int_value: int
    double_value: float
    array_value: OtlpViewArrayValue
    kvlist_value: OtlpViewKeyValueList
    bytes_value: bytes
    def __init__(self, string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., array_value: _Optional[_Union[OtlpViewArrayValue, _Mapping]] = ..., kvlist_value: _Optional[_Union[OtlpViewKeyValueList, _Mapping]] = ..., bytes_value: _Optional[bytes] = ...) -> None: ...

class OtlpViewArrayValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[OtlpViewAnyValue]
    def __init__(self, values: _Optional[_Iterable[_Union[OtlpViewAnyValue, _Mapping]]] = ...) -> None: ...

class OtlpViewKeyValueList(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OtlpViewAnyValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OtlpViewAnyValue, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, OtlpViewAnyValue]
    def __init__(self, values: _Optional[_Mapping[str, OtlpViewAnyValue]] = ...) -> None: ...
