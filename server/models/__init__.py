"""SQLAlchemy models of the server, one module per domain.

Every module in this package is imported by :func:`server.db.load_models`,
so a new table only needs a new module here (and a migration).
"""
