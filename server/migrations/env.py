"""Alembic environment: runs against the engine handed in by server.migrate."""

from __future__ import annotations

from alembic import context

from server.migrate import metadata

target_metadata = metadata()
config = context.config


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
