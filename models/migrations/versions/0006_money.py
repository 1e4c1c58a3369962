"""Money and signals: cost on the ledger, operators' prices, per-tenant budgets, the embedding cache

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("cost", sa.Float))
    op.add_column("usage_events", sa.Column("cached", sa.Boolean, nullable=False, server_default=sa.text("false")))
    op.add_column("usage_events", sa.Column("cached_tokens", sa.Integer, nullable=False, server_default=sa.text("0")))
    op.create_table(
        "model_prices",
        sa.Column("model", sa.String(400), primary_key=True),
        sa.Column("input_cost_per_token", sa.Float, nullable=False),
        sa.Column("output_cost_per_token", sa.Float, nullable=False),
        sa.Column("input_cost_per_token_batches", sa.Float),
        sa.Column("output_cost_per_token_batches", sa.Float),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(400), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("token_limit", sa.BigInteger),
        sa.Column("cost_limit", sa.Float),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger, nullable=False),
        sa.Column("spent_cost", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("tenant_id", "model", name="uq_budgets_tenant_id_model"),
    )
    op.create_table(
        "embedding_cache",
        sa.Column("scope", sa.String(32), primary_key=True),
        sa.Column("key", sa.LargeBinary(32), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_embedding_cache_scope_used", "embedding_cache", ["scope", "used_at"])


def downgrade() -> None:
    op.drop_table("embedding_cache")
    op.drop_table("budgets")
    op.drop_table("model_prices")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("cached_tokens")
        batch.drop_column("cached")
        batch.drop_column("cost")
