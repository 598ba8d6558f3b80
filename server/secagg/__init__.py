"""Secure aggregation on the server: the cohort roster, rounds in the database, the servicer and the job.

Public face: :func:`server.secagg.service.add_to_server` (``server.app.SERVICES``),
:func:`server.secagg.job.run_secagg` (``server.app.JOBS``) and
:func:`server.secagg.rounds.configure` (round timing per server).
"""
