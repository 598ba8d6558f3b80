"""secure aggregation: roster, rounds, participants

Revision ID: secagg01
Revises: 0002_audit_heads
Create Date: 2026-12-02 02:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'secagg01'
down_revision = '0003_validation'
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('secagg_roster',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('cohort', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('certificate_pem', sa.LargeBinary(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    with op.batch_alter_table('secagg_roster', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_secagg_roster_cohort'), ['cohort'], unique=False)

    op.create_table('secagg_rounds',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('round_id', sa.String(length=64), nullable=False),
    sa.Column('cohort', sa.String(length=64), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('window_end', sa.BigInteger(), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('context', sa.LargeBinary(), nullable=False),
    sa.Column('roster_size', sa.Integer(), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('sigma_central', sa.Float(), nullable=False),
    sa.Column('delta', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submit_deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('unmask_deadline', sa.DateTime(timezone=True), nullable=True),
    sa.Column('survivors_json', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('abort_reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cohort', 'window_start', 'schema_version', name='uq_secagg_rounds_window'),
    sa.UniqueConstraint('round_id')
    )
    with op.batch_alter_table('secagg_rounds', schema=None) as batch_op:
        batch_op.create_index('ix_secagg_rounds_phase', ['phase'], unique=False)

    op.create_table('secagg_participants',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('round_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('masked_input', sa.LargeBinary(), nullable=True),
    sa.Column('input_digest', sa.String(length=64), nullable=False),
    sa.Column('unmask_request', sa.LargeBinary(), nullable=True),
    sa.Column('attestation', sa.LargeBinary(), nullable=True),
    sa.Column('unmask_response', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['round_pk'], ['secagg_rounds.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('round_pk', 'tenant_id', name='uq_secagg_participants_tenant')
    )
    with op.batch_alter_table('secagg_participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_secagg_participants_round_pk'), ['round_pk'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('secagg_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_secagg_participants_round_pk'))
    op.drop_table('secagg_participants')
    with op.batch_alter_table('secagg_rounds', schema=None) as batch_op:
        batch_op.drop_index('ix_secagg_rounds_phase')
    op.drop_table('secagg_rounds')
    with op.batch_alter_table('secagg_roster', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_secagg_roster_cohort'))
    op.drop_table('secagg_roster')
