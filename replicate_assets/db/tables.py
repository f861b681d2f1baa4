"""Our tables' definitions: the pipeline's, the public `product_embeddings`, and the similarity domain's.

Every timestamp keeps microseconds on MySQL too, so an instant copied from the shop compares equal to it, and
floats are double precision there. Both are spelled as MySQL types: Dagster, once its storage is imported, makes
every generic DateTime DATETIME(6) and Float FLOAT(32) (a DOUBLE) on MySQL, so generic types would give tables a
different shape depending on which process created them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

OUTCOMES = "clip_embedding_outcomes"
EMBEDDINGS = "product_embeddings"
VECTORS, SIMILARITIES = "clip_image_vectors", "product_similarities"
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql")
MODEL = sa.String(191)  # utf8mb4 keys of 191 characters stay within MySQL's index limit


class OurTables:
    """The tables we create in the shop database, on `metadata`, with ids typed like the shop's."""

    def __init__(self, metadata: sa.MetaData, product_id_type: Any, image_id: sa.Column, options: dict[str, Any]):
        image_key = f"product_images.{image_id.name}"
        self.outcomes = sa.Table(
            OUTCOMES,
            metadata,
            sa.Column(
                "product_image_id", image_id.type, sa.ForeignKey(image_key, ondelete="CASCADE"), primary_key=True
            ),
            sa.Column("model", MODEL, primary_key=True),
            sa.Column("product_id", product_id_type, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("url_hash", sa.String(64)),
            sa.Column("image_updated_at", TIMESTAMP),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("dimensions", sa.Integer),
            sa.Column("error", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            # The attempts allowed by the run that wrote the row: checks, sensors and commands judge it by that.
            sa.Column("max_attempts", sa.Integer),
            sa.Column("predict_time", FLOAT),
            sa.Column("prediction_id", sa.String(64)),
            sa.Column("created_at", TIMESTAMP, nullable=False),
            sa.Column("updated_at", TIMESTAMP, nullable=False),
            # The claim of the run embedding the image: its run id, its process, until when; and when a create
            # for it may last have been sent (a later run lists predictions from then on to take them over).
            sa.Column("claimed_by", sa.String(64)),
            sa.Column("claim_process", sa.String(255)),
            sa.Column("claim_expires_at", TIMESTAMP),
            sa.Column("sent_at", TIMESTAMP),
            # Large values last: SQLite reads the columns before them without walking overflow pages.
            sa.Column("embedding", sa.JSON),
            sa.Index("ix_clip_embedding_outcomes_model_url", "model", "url_hash"),
            # Pages of one status are read in product_image_id order: the index serves both the filter and the order.
            sa.Index("ix_clip_embedding_outcomes_model_status", "model", "status", "product_image_id"),
            sa.Index("ix_clip_embedding_outcomes_claimed_by", "claimed_by"),
            **options,
        )
        id_type = sa.BigInteger().with_variant(sa.Integer, "sqlite")
        self.embeddings = sa.Table(
            EMBEDDINGS,
            metadata,
            sa.Column("id", id_type, primary_key=True, autoincrement=True),
            sa.Column(
                "product_id",
                product_id_type,
                sa.ForeignKey("products.id", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            sa.Column(
                "product_image_id",
                image_id.type,
                sa.ForeignKey(image_key, ondelete="CASCADE"),
                nullable=False,
                unique=True,
            ),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("dimensions", sa.Integer, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("created_at", TIMESTAMP),
            sa.Column("updated_at", TIMESTAMP),
            sa.Column("embedding", sa.JSON, nullable=False),
            **options,
        )
        # Search-ready vectors (private to the similarity domain): L2-normalised float32, one model at a time,
        # copied from product_embeddings as they change (`published_at` is the copy's product_embeddings.updated_at).
        # `listed_at` says when product_similarities last took the vector in; `removed` keeps a vector whose image
        # left product_embeddings until the lists that showed it are computed again.
        self.vectors = sa.Table(
            VECTORS,
            metadata,
            sa.Column("product_image_id", image_id.type, primary_key=True),
            sa.Column("product_id", product_id_type, nullable=False, index=True),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("url_hash", sa.String(64)),
            sa.Column("digest", sa.String(40), nullable=False),  # identical vectors share it
            sa.Column("published_at", TIMESTAMP),
            sa.Column("updated_at", TIMESTAMP, nullable=False),
            sa.Column("listed_at", TIMESTAMP),
            sa.Column("removed", sa.Boolean, nullable=False, default=False),
            sa.Column("vector", sa.LargeBinary, nullable=False),
            **options,
        )
        # Public: each product's most similar products (best pair of their images), read with one indexed
        # `where product_id = ? order by rank`.
        self.similarities = sa.Table(
            SIMILARITIES,
            metadata,
            sa.Column("product_id", product_id_type, primary_key=True),
            sa.Column("rank", sa.Integer, primary_key=True),
            sa.Column("similar_product_id", product_id_type, nullable=False),
            sa.Column("score", FLOAT, nullable=False),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("computed_at", TIMESTAMP, nullable=False),
            **options,
        )
        # Public: products that show the very same image (same URL or an identical vector): not "similar".
        self.duplicates = sa.Table(
            "product_duplicates",
            metadata,
            sa.Column("product_id", product_id_type, primary_key=True),
            sa.Column("duplicate_product_id", product_id_type, primary_key=True),
            sa.Column("reason", sa.String(32), nullable=False),
            sa.Column("model", MODEL, nullable=False),
            sa.Column("computed_at", TIMESTAMP, nullable=False),
            **options,
        )
        # Private: embeddings of search queries, so a repeated query costs nothing.
        self.query_cache = sa.Table(
            "search_query_embeddings",
            metadata,
            sa.Column("model", MODEL, primary_key=True),
            sa.Column("kind", sa.String(8), primary_key=True),  # text, image
            sa.Column("query_hash", sa.String(64), primary_key=True),
            sa.Column("shown", sa.Text, nullable=False),  # the text, or the URL without credentials or query
            sa.Column("hits", sa.Integer, nullable=False, default=0),
            sa.Column("created_at", TIMESTAMP, nullable=False),
            sa.Column("vector", sa.LargeBinary, nullable=False),
            **options,
        )
        self.all = [self.outcomes, self.embeddings, self.vectors, self.similarities, self.duplicates, self.query_cache]
