"""Fleet-wide provider limits: the tenant's own limits on a model, and the limiter's state
for deployments without Redis (the embedded default, a RabbitMQ broker).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenant_llm", sa.Column("rpm_limit", sa.Integer))
    op.add_column("tenant_llm", sa.Column("tpm_limit", sa.Integer))
    op.add_column("tenant_llm", sa.Column("max_concurrency", sa.Integer))
    op.create_table(
        "limiter_buckets",
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limiter_buckets")
    with op.batch_alter_table("tenant_llm") as batch:
        batch.drop_column("max_concurrency")
        batch.drop_column("tpm_limit")
        batch.drop_column("rpm_limit")
