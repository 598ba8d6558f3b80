"""Validation stages: rollout phase (replay, shadow, live), intent scope, validation evidence; hotspot SLAs.

Revision ID: 0003_validation
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_validation"
down_revision = "0002_audit_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phase", sa.String(length=20), nullable=False, server_default="live"))
        batch_op.add_column(sa.Column("intents_json", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("validation_json", sa.Text(), nullable=False, server_default="{}"))
    op.create_table(
        "hotspot_slas",
        sa.Column("hotspot_key", sa.String(length=300), nullable=False),
        sa.Column("cohort", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("detected_at", sa.String(length=40), nullable=False),
        sa.Column("sla_seconds", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("candidate_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("closed_at", sa.String(length=40), nullable=True),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("hotspot_key"),
    )
    with op.batch_alter_table("hotspot_slas", schema=None) as batch_op:
        batch_op.create_index("ix_hotspot_slas_cohort", ["cohort"], unique=False)
        batch_op.create_index("ix_hotspot_slas_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hotspot_slas", schema=None) as batch_op:
        batch_op.drop_index("ix_hotspot_slas_state")
        batch_op.drop_index("ix_hotspot_slas_cohort")
    op.drop_table("hotspot_slas")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("validation_json")
        batch_op.drop_column("intents_json")
        batch_op.drop_column("phase")
