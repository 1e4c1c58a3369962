"""a partial index for releasing a job's next pending chunk

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_job_chunks_pending", "job_chunks", ["job_id", "seq"], postgresql_where=PENDING, sqlite_where=PENDING
    )


def downgrade() -> None:
    op.drop_index("ix_job_chunks_pending", table_name="job_chunks")
