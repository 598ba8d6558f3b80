"""gRPC servicers: thin translations between wire messages and the domain layer.

Each module exposes ``add_to_server(grpc_server, ctx)``; :mod:`server.app`
registers every module listed in ``SERVICE_MODULES``. Every method starts by
authenticating its caller with :func:`server.auth.require`.
"""
