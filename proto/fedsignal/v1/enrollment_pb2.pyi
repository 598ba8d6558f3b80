from fedsignal.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("tenant_id", "cohort", "client_certificate_pem", "ca_certificate_pem", "trust_root", "signal_schema")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_ROOT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    cohort: str
    client_certificate_pem: bytes
    ca_certificate_pem: bytes
    trust_root: bytes
    signal_schema: _common_pb2.SignalSchema
    def __init__(self, tenant_id: _Optional[str] = ..., cohort: _Optional[str] = ..., client_certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ..., trust_root: _Optional[bytes] = ..., signal_schema: _Optional[_Union[_common_pb2.SignalSchema, _Mapping]] = ...) -> None: ...
