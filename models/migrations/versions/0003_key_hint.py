"""tenant_llm.key_hint: the last four characters of a key, shown instead of the key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenant_llm", sa.Column("key_hint", sa.String(8)))


def downgrade() -> None:
    with op.batch_alter_table("tenant_llm") as batch:
        batch.drop_column("key_hint")
