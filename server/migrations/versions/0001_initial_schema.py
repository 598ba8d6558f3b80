"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 22:06:22.579847
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=100), nullable=False),
    sa.Column('payload_json', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_kind'), ['kind'], unique=False)

    op.create_table('candidates',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('category', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=100), nullable=False),
    sa.Column('risk_class', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('artifacts_json', sa.Text(), nullable=False),
    sa.Column('evidence_json', sa.Text(), nullable=False),
    sa.Column('rollout_plan_json', sa.Text(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('signing_payload', sa.Text(), nullable=False),
    sa.Column('approval_json', sa.Text(), nullable=True),
    sa.Column('reject_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('bundle_version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_candidates_cohort'), ['cohort'], unique=False)
        batch_op.create_index(batch_op.f('ix_candidates_state'), ['state'], unique=False)

    op.create_table('certificates',
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('cohort', sa.String(length=64), nullable=True),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('serial')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_subject'), ['subject'], unique=False)

    op.create_table('cohort_bundles',
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('metadata_json', sa.Text(), nullable=False),
    sa.Column('issued_at', sa.String(length=40), nullable=False),
    sa.Column('expires_at', sa.String(length=40), nullable=False),
    sa.Column('root_version', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.String(length=64), nullable=True),
    sa.Column('rollout_id', sa.String(length=64), nullable=True),
    sa.Column('exposure_json', sa.Text(), nullable=True),
    sa.Column('stable_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('cohort', 'version')
    )
    op.create_table('merged_windows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('window_end', sa.BigInteger(), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('cells', sa.LargeBinary(), nullable=False),
    sa.Column('variance', sa.Float(), nullable=False),
    sa.Column('tenants', sa.Integer(), nullable=False),
    sa.Column('reports', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cohort', 'window_start', 'schema_version', name='uq_merged_windows_window')
    )
    op.create_table('rollouts',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('candidate_id', sa.String(length=64), nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('paused_by', sa.String(length=20), nullable=False),
    sa.Column('pause_reason', sa.Text(), nullable=False),
    sa.Column('plan_json', sa.Text(), nullable=False),
    sa.Column('plan_digest', sa.String(length=64), nullable=False),
    sa.Column('candidate_label', sa.String(length=100), nullable=False),
    sa.Column('stable_label', sa.String(length=100), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('stage_window_start', sa.BigInteger(), nullable=False),
    sa.Column('stage_started_at', sa.String(length=40), nullable=False),
    sa.Column('participants_json', sa.Text(), nullable=False),
    sa.Column('session_fraction', sa.Float(), nullable=False),
    sa.Column('n_tenants', sa.Integer(), nullable=False),
    sa.Column('window_seconds', sa.Integer(), nullable=False),
    sa.Column('bundle_version', sa.BigInteger(), nullable=False),
    sa.Column('last_assessment_json', sa.Text(), nullable=False),
    sa.Column('started_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('finished_at', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('candidate_id')
    )
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollouts_cohort'), ['cohort'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollouts_state'), ['state'], unique=False)

    op.create_table('signal_reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('content_digest', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=200), nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('window_end', sa.BigInteger(), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('taxonomy_version', sa.String(length=50), nullable=False),
    sa.Column('mechanism', sa.String(length=40), nullable=False),
    sa.Column('noise_scale', sa.Float(), nullable=False),
    sa.Column('noise_variance', sa.Float(), nullable=False),
    sa.Column('declared_rho', sa.Float(), nullable=False),
    sa.Column('declared_epsilon', sa.Float(), nullable=False),
    sa.Column('declared_delta', sa.Float(), nullable=False),
    sa.Column('cell_count', sa.Integer(), nullable=False),
    sa.Column('cells', sa.LargeBinary(), nullable=False),
    sa.Column('collector_version', sa.String(length=100), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('merge_generation', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key', name='uq_signal_reports_idempotency_key'),
    sa.UniqueConstraint('tenant_id', 'cohort', 'window_start', name='uq_signal_reports_tenant_window')
    )
    with op.batch_alter_table('signal_reports', schema=None) as batch_op:
        batch_op.create_index('ix_signal_reports_pending', ['cohort', 'window_start', 'schema_version'], unique=False, postgresql_where=sa.text('merge_generation IS NULL'), sqlite_where=sa.text('merge_generation IS NULL'))
        batch_op.create_index('ix_signal_reports_window', ['cohort', 'window_start'], unique=False)

    op.create_table('signal_schema_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cohort', 'version', name='uq_signal_schema_cohort_version')
    )
    op.create_table('tenant_bundle_status',
    sa.Column('tenant_id', sa.String(length=200), nullable=False),
    sa.Column('cohort', sa.String(length=200), nullable=False),
    sa.Column('active_version', sa.BigInteger(), nullable=False),
    sa.Column('previous_version', sa.BigInteger(), nullable=False),
    sa.Column('healthy', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.String(length=200), nullable=False),
    sa.Column('reported_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    with op.batch_alter_table('tenant_bundle_status', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_bundle_status_cohort'), ['cohort'], unique=False)

    op.create_table('tenants',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('cohort', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenants_cohort'), ['cohort'], unique=False)

    op.create_table('trust_roots',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('root_json', sa.Text(), nullable=False),
    sa.Column('installed_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    op.create_table('enrollment_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('cohort', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by_serial', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.tenant_id'], ),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollment_tokens_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('reviewer_signatures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('candidate_id', sa.String(length=64), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('keyid', sa.String(length=128), nullable=False),
    sa.Column('signature_hex', sa.Text(), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('candidate_id', 'revision', 'keyid', name='uq_signature_key')
    )
    with op.batch_alter_table('reviewer_signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviewer_signatures_candidate_id'), ['candidate_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('reviewer_signatures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviewer_signatures_candidate_id'))

    op.drop_table('reviewer_signatures')
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrollment_tokens_tenant_id'))

    op.drop_table('enrollment_tokens')
    op.drop_table('trust_roots')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenants_cohort'))

    op.drop_table('tenants')
    with op.batch_alter_table('tenant_bundle_status', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_bundle_status_cohort'))

    op.drop_table('tenant_bundle_status')
    op.drop_table('signal_schema_versions')
    with op.batch_alter_table('signal_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_signal_reports_window')
        batch_op.drop_index('ix_signal_reports_pending', postgresql_where=sa.text('merge_generation IS NULL'), sqlite_where=sa.text('merge_generation IS NULL'))

    op.drop_table('signal_reports')
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollouts_state'))
        batch_op.drop_index(batch_op.f('ix_rollouts_cohort'))

    op.drop_table('rollouts')
    op.drop_table('merged_windows')
    op.drop_table('cohort_bundles')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_subject'))

    op.drop_table('certificates')
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_candidates_state'))
        batch_op.drop_index(batch_op.f('ix_candidates_cohort'))

    op.drop_table('candidates')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_kind'))

    op.drop_table('audit_log')

