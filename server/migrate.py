"""Alembic migrations of the server schema, callable from code and the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData

# Every domain's models, so that Base.metadata knows every table.
from server import audit as _audit  # noqa: F401
from server.db import Base
from server.evaluation import models as _evaluation_models  # noqa: F401
from server.identity import models as _identity_models  # noqa: F401
from server.review import models as _review_models  # noqa: F401
from server.rollout import models as _rollout_models  # noqa: F401
from server.secagg import models as _secagg_models  # noqa: F401
from server.signals import models as _signals_models  # noqa: F401

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision`` (``"base"``: no tables)."""
    command.downgrade(alembic_config(engine), revision)


def metadata() -> MetaData:
    """The metadata of every server table (what the migrations must produce)."""
    return Base.metadata


def init_db(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    upgrade(engine)


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_problem(engine: Engine) -> str | None:
    """Why a server should not serve from this database's schema, or None.

    No schema at all, or an older revision of this release's migrations, is refused (every job
    and call would fail on a missing table or column). A revision this release does not know is
    a newer release's (``fedsignal server upgrade`` runs before new replicas roll out): served.
    """
    quiet = logging.getLogger("alembic.runtime.migration")  # its "will assume ... DDL" line, at every start
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        current = current_revision(engine)
    finally:
        quiet.setLevel(level)
    if current is None:
        return "the database holds no fedsignal schema: run `fedsignal server init-db` with the same --database-url"
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    if current == head:
        return None
    if current in {rev.revision for rev in script.walk_revisions()}:
        return (f"the database schema is at revision {current}, this release needs {head}: run "
                "`fedsignal server upgrade` with the same --database-url")
    return None
