"""claims, precise timestamps and the similarity tables

clip_embedding_outcomes gains the claim columns (claimed_by, claim_process, claim_expires_at, sent_at) and
max_attempts, microsecond timestamps on MySQL/MariaDB, and the paging index on (model, status, product_image_id);
on MySQL/MariaDB, every timestamp of ours becomes DATETIME(6) and every float DOUBLE (what a table made inside a
Dagster run already had; one made by `replicate-assets migrate` had DATETIME and FLOAT);
product_similarities, product_duplicates, clip_image_vectors and search_query_embeddings are created. A database an
earlier release made, with some of these already, gets only what it lacks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from replicate_assets.db.migrations import steps

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql")
MODEL = sa.String(191)
OUTCOMES = "clip_embedding_outcomes"
CLAIMS = ["max_attempts", "claimed_by", "claim_process", "claim_expires_at", "sent_at"]
NEW_TABLES = ["clip_image_vectors", "product_similarities", "product_duplicates", "search_query_embeddings"]


def upgrade() -> None:
    product_id, image_id, _ = steps.shop_types()
    options = steps.table_options()
    steps.retype(
        OUTCOMES,
        {"image_updated_at": TIMESTAMP, "created_at": TIMESTAMP, "updated_at": TIMESTAMP, "predict_time": FLOAT},
    )
    steps.retype("product_embeddings", {"created_at": TIMESTAMP, "updated_at": TIMESTAMP})
    steps.converge(
        OUTCOMES,
        [
            sa.Column("max_attempts", sa.Integer),
            sa.Column("claimed_by", sa.String(64)),
            sa.Column("claim_process", sa.String(255)),
            sa.Column("claim_expires_at", TIMESTAMP),
            sa.Column("sent_at", TIMESTAMP),
        ],
        {
            "ix_clip_embedding_outcomes_model_status": ["model", "status", "product_image_id"],
            "ix_clip_embedding_outcomes_claimed_by": ["claimed_by"],
        },
    )
    steps.converge(
        "clip_image_vectors",
        [
            sa.Column("product_image_id", image_id, primary_key=True),
            sa.Column("product_id", product_id, nullable=False),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("url_hash", sa.String(64)),
            sa.Column("digest", sa.String(40), nullable=False),
            sa.Column("published_at", TIMESTAMP),
            sa.Column("updated_at", TIMESTAMP, nullable=False),
            sa.Column("listed_at", TIMESTAMP),
            sa.Column("removed", sa.Boolean, nullable=False),
            sa.Column("vector", sa.LargeBinary, nullable=False),
        ],
        {"ix_clip_image_vectors_product_id": ["product_id"]},
        **options,
    )
    steps.converge(
        "product_similarities",
        [
            sa.Column("product_id", product_id, primary_key=True),
            sa.Column("rank", sa.Integer, primary_key=True),
            sa.Column("similar_product_id", product_id, nullable=False),
            sa.Column("score", FLOAT, nullable=False),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("computed_at", TIMESTAMP, nullable=False),
        ],
        {},
        **options,
    )
    steps.converge(
        "product_duplicates",
        [
            sa.Column("product_id", product_id, primary_key=True),
            sa.Column("duplicate_product_id", product_id, primary_key=True),
            sa.Column("reason", sa.String(32), nullable=False),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("computed_at", TIMESTAMP, nullable=False),
        ],
        {},
        **options,
    )
    # Tables an unversioned release made with `migrate` (DATETIME, FLOAT on MySQL): as declared now.
    steps.retype("clip_image_vectors", {"published_at": TIMESTAMP})
    steps.retype("product_similarities", {"score": FLOAT})
    steps.converge(
        "search_query_embeddings",
        [
            sa.Column("model", MODEL, primary_key=True),
            sa.Column("kind", sa.String(8), primary_key=True),
            sa.Column("query_hash", sa.String(64), primary_key=True),
            sa.Column("shown", sa.Text, nullable=False),
            sa.Column("hits", sa.Integer, nullable=False),
            sa.Column("created_at", TIMESTAMP, nullable=False),
            sa.Column("vector", sa.LargeBinary, nullable=False),
        ],
        {},
        **options,
    )


def downgrade() -> None:
    """Back to 0001: the similarity tables go (the next release's run computes them again from product_embeddings);
    claims and max_attempts go (a run of the older release claims nothing); every embedding stays."""
    for table in NEW_TABLES:
        steps.drop_table(table)
    steps.drop_index(OUTCOMES, "ix_clip_embedding_outcomes_claimed_by")
    steps.drop_columns(OUTCOMES, CLAIMS)
