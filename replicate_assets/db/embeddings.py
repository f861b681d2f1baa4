"""`product_embeddings`, the public contract: one row per image, what the shop and downstream assets read.

Columns: id, product_id, product_image_id (unique), embedding (a JSON array of floats, Eloquent's JSON cast
reads it), model, dimensions, image_url, created_at, updated_at. Written only by `publish`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction, pages, upsert_statement
from replicate_assets.db.instants import utcnow
from replicate_assets.db.schema import INDEXED, Schema, Window

PUBLISHED_COLUMNS = (
    "product_id",
    "product_image_id",
    "embedding",
    "model",
    "dimensions",
    "image_url",
    "created_at",
    "updated_at",
)


def stale(schema: Schema, model: str) -> sa.ColumnElement:
    """The outcome's embedding is not (or no longer) what product_embeddings holds for its image."""
    o, e = schema.outcomes, schema.embeddings
    return sa.or_(e.c.id.is_(None), e.c.model != model, e.c.updated_at < o.c.updated_at, e.c.image_url != o.c.image_url)


class EmbeddingStore:
    """Publishing into `product_embeddings` for one shop database."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.engine = schema.engine

    def product_embeddings(self, model: str, product_id: int) -> list[list[float]]:
        """The published embeddings of one product's images (one indexed query): what a search uses for a product
        newer than the similarity lists."""
        e = self.schema.embeddings
        query = (
            sa.select(e.c.embedding)
            .where(e.c.product_id == product_id, e.c.model == model)
            .order_by(e.c.product_image_id)
        )
        with self.engine.connect() as conn:
            found = [row[0] for row in conn.execute(query)]
        return [json.loads(v) if isinstance(v, str | bytes) else v for v in found]

    def published(self, window: Window, model: str, page_size: int = 2000) -> Iterator[list[sa.Row]]:
        """Pages of the window's rows of product_embeddings (by the image's created_at), embeddings parsed: what
        the Parquet export writes. Rows whose image was deleted are gone with it (cascade)."""
        e, s = self.schema.embeddings, self.schema
        query = (
            sa.select(
                e.c.product_image_id,
                e.c.product_id,
                e.c.model,
                e.c.dimensions,
                e.c.embedding,
                e.c.created_at,
                e.c.updated_at,
            )
            .select_from(e.join(s.images, s.image.id == e.c.product_image_id))
            .where(e.c.model == model, *s.in_window(window))
        )
        if self.schema.missing_tables():
            return
        yield from pages(self.engine, query, e.c.product_image_id, page_size)

    def _unpublished(self, window: Window, model: str) -> tuple[sa.FromClause, list[sa.ColumnElement]]:
        """Indexed outcomes of the window whose product_embeddings row is missing or older: (from, where).

        Images whose product is gone (a shop without enforced foreign keys) are never published.
        """
        s, o, e = self.schema, self.schema.outcomes, self.schema.embeddings
        joined = (
            o.join(s.images, s.image.id == o.c.product_image_id)
            .join(s.products, s.products.c.id == o.c.product_id)
            .outerjoin(e, e.c.product_image_id == o.c.product_image_id)
        )
        return joined, [o.c.model == model, o.c.status == INDEXED, *s.in_window(window), stale(s, model)]

    def unpublished(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the embeddings `publish` would write, parsed: (product_image_id, embedding)."""
        self.schema.ensure_tables()
        o = self.schema.outcomes
        joined, where = self._unpublished(window, model)
        query = sa.select(o.c.product_image_id, o.c.embedding).select_from(joined).where(*where)
        yield from pages(self.engine, query, o.c.product_image_id, page_size)

    def publish(self, window: Window, model: str, page_size: int) -> Iterator[int]:
        """Upsert the window's new embeddings, one page per transaction, yielding the rows written.

        The JSON is copied inside the database (INSERT ... SELECT), never parsed; re-running never duplicates
        (product_image_id is unique).
        """
        self.schema.ensure_tables()
        o, e = self.schema.outcomes, self.schema.embeddings
        joined, where = self._unpublished(window, model)
        ids = sa.select(o.c.product_image_id).select_from(joined).where(*where)
        for page in pages(self.engine, ids, o.c.product_image_id, page_size):
            now = sa.literal(utcnow(), sa.DateTime)
            rows = (
                sa.select(
                    o.c.product_id,
                    o.c.product_image_id,
                    o.c.embedding,
                    sa.literal(model, sa.String),
                    o.c.dimensions,
                    o.c.image_url,
                    now,
                    sa.case((o.c.updated_at > now, o.c.updated_at), else_=now),
                )
                .select_from(joined)
                .where(*where, o.c.product_image_id.between(page[0][0], page[-1][0]))
            )

            def work(conn: sa.Connection, rows: sa.Select = rows) -> None:
                conn.execute(
                    upsert_statement(
                        conn, e, PUBLISHED_COLUMNS, keys=("product_image_id",), keep=("created_at",), select=rows
                    )
                )

            in_transaction(self.engine, work)
            yield len(page)
