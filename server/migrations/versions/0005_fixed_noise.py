"""Fixed noise scales: every cohort's newest schema version fixes the noise its tenants use.

Schema versions of earlier releases have no noise scale (local mode, each tenant declared its own
and one that declared a tiny scale outweighed every other tenant in the merge). This publishes, for
each such cohort, the next version with the scale fixed (``server.signals.schemas.fix_legacy_noise``):
the cut-over after which a report naming a legacy version is refused.

Revision ID: 0005_fixed_noise
Revises: secagg01
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op
from sqlalchemy.orm import Session

revision = "0005_fixed_noise"
down_revision = "secagg01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from server.signals.schemas import fix_legacy_noise

    session = Session(bind=op.get_bind())
    fix_legacy_noise(session, datetime.now(UTC))
    session.flush()


def downgrade() -> None:
    # The published versions stay: schema versions are immutable once tenants may have fetched them.
    pass
