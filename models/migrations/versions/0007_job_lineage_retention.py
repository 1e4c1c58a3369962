"""Jobs: the request hash behind an idempotency key, the job a retry retries, when a job's
inputs and results were purged; indexes for `job list` and the retention sweep

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64)))
        batch.add_column(sa.Column("retry_of", sa.String(32)))
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True)))
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant_id", "created_at"])
    op.create_index("ix_jobs_created", "jobs", ["created_at"])
    op.create_index(
        "ix_jobs_finished_unpurged",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("purged_at IS NULL"),
        sqlite_where=sa.text("purged_at IS NULL"),
    )
    op.create_index("ix_jobs_retry_of", "jobs", ["retry_of"])


def downgrade() -> None:
    op.drop_index("ix_jobs_retry_of", "jobs")
    op.drop_index("ix_jobs_finished_unpurged", "jobs")
    op.drop_index("ix_jobs_created", "jobs")
    op.drop_index("ix_jobs_tenant_created", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("purged_at")
        batch.drop_column("retry_of")
        batch.drop_column("request_hash")
