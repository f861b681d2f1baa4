"""first release: clip_embedding_outcomes and product_embeddings

The shape the first release (and every release before versioned migrations) created. A database one of them
made is adopted: what exists is kept, only what is missing is created.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa

from replicate_assets.db.migrations import steps

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    product_id, image_id, image_key = steps.shop_types()
    options = steps.table_options()
    steps.converge(
        "clip_embedding_outcomes",
        [
            sa.Column(
                "product_image_id",
                image_id,
                sa.ForeignKey(f"product_images.{image_key}", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("model", sa.String(191), primary_key=True),
            sa.Column("product_id", product_id, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("url_hash", sa.String(64)),
            sa.Column("image_updated_at", sa.DateTime),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("dimensions", sa.Integer),
            sa.Column("error", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("predict_time", sa.Float),
            sa.Column("prediction_id", sa.String(64)),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
            sa.Column("embedding", sa.JSON),
        ],
        {
            "ix_clip_embedding_outcomes_model_url": ["model", "url_hash"],
            "ix_clip_embedding_outcomes_model_status": ["model", "status"],
        },
        **options,
    )
    steps.converge(
        "product_embeddings",
        [
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("product_id", product_id, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False),
            sa.Column(
                "product_image_id",
                image_id,
                sa.ForeignKey(f"product_images.{image_key}", ondelete="CASCADE"),
                nullable=False,
                unique=True,
            ),
            sa.Column("model", sa.String(191), nullable=False),
            sa.Column("dimensions", sa.Integer, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("created_at", sa.DateTime),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("embedding", sa.JSON, nullable=False),
        ],
        {"ix_product_embeddings_product_id": ["product_id"]},
        **options,
    )


def downgrade() -> None:
    steps.drop_table("product_embeddings")
    steps.drop_table("clip_embedding_outcomes")
