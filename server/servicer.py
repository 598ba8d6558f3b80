"""gRPC servicers: thin translations between wire messages and the domain layer.

Each module exposes ``add_to_server(grpc_server, ctx)``; :mod:`server.app`
registers every module listed in ``SERVICE_MODULES``. Every method starts by
authenticating its caller with :func:`server.identity.auth.require`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

#: (domain error type, status) pairs; the first matching type wins, so list subclasses first.
StatusTable = Sequence[tuple[type[BaseException], grpc.StatusCode]]


def status_for(exc: BaseException, table: StatusTable) -> grpc.StatusCode:
    """The gRPC status a servicer answers ``exc`` with (``INTERNAL`` when unmapped)."""
    for kind, code in table:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL
