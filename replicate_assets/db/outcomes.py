"""`clip_embedding_outcomes`, private to the pipeline: each image's outcome per model (claims: claims.py).

Writes are conditional: a reset only applies to a row still as it was read, and a run's results only to an
image whose URL is still the one that was sent, so two runs never overwrite each other's work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction, insert_missing_statement, pages
from replicate_assets.db.instants import as_instant, utcnow
from replicate_assets.db.schema import FAILED, INDEXED, PENDING, Schema, Window
from replicate_assets.urls import url_hash

CLAIM_COLUMNS = ("claimed_by", "claim_process", "claim_expires_at")


class OutcomeStore:
    """Reads and writes of `clip_embedding_outcomes` for one shop database."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.engine = schema.engine
        self.table = schema.outcomes

    # -- product_images: what each image needs ------------------------------------------------------------------

    def window_images(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the window's images with their product (None: an orphan), outcome and published embedding."""
        self.schema.ensure_tables()
        s, i, o, e, p = self.schema, self.schema.image, self.table, self.schema.embeddings, self.schema.products
        query = (
            sa.select(
                i.id.label("id"),
                i.product_id.label("product_id"),
                i.path.label("path"),
                s.raw(i.updated_at).label("updated_at"),
                p.c.id.label("product_found"),
                o.c.status,
                o.c.image_url.label("outcome_url"),
                o.c.image_updated_at,
                o.c.attempts,
                e.c.model.label("embedding_model"),
                e.c.image_url.label("embedding_url"),
                e.c.updated_at.label("embedding_updated_at"),
            )
            .select_from(
                s.images.outerjoin(p, p.c.id == i.product_id)
                .outerjoin(o, sa.and_(o.c.product_image_id == i.id, o.c.model == model))
                .outerjoin(e, e.c.product_image_id == i.id)
            )
            .where(*s.in_window(window))
        )
        yield from pages(self.engine, query, i.id, page_size)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert outcome rows for images that have none; a row another run inserted first is left as it is."""
        if not rows:
            return
        now = utcnow()
        rows = [{"created_at": now, "updated_at": now, **row} for row in rows]

        def work(conn: sa.Connection) -> None:
            conn.execute(insert_missing_statement(conn, self.table, ("product_image_id", "model")), rows)

        in_transaction(self.engine, work)

    def replace(self, rows: Sequence[dict[str, Any]]) -> None:
        """Reset outcome rows (changed images, retries due), each only if it is still as it was read.

        Each row carries `expected_status`, `expected_url` and `expected_attempts`: a row another run changed in
        the meantime is left to that run.
        """
        if not rows:
            return
        o = self.table
        values = [c for c in rows[0] if not c.startswith("expected_") and c not in ("product_image_id", "model")]
        stmt = (
            sa.update(o)
            .where(
                o.c.product_image_id == sa.bindparam("key_image"),
                o.c.model == sa.bindparam("key_model"),
                o.c.status == sa.bindparam("expected_status"),
                o.c.attempts == sa.bindparam("expected_attempts"),
                o.c.image_url.is_not_distinct_from(sa.bindparam("expected_url", type_=sa.Text)),
            )
            .values(
                {
                    **{c: sa.bindparam(f"new_{c}", type_=o.c[c].type) for c in [*values, "updated_at"]},
                    **dict.fromkeys(CLAIM_COLUMNS),
                }
            )
        )
        now = utcnow()
        params = [
            {
                "key_image": r["product_image_id"],
                "key_model": r["model"],
                "expected_status": r["expected_status"],
                "expected_attempts": r["expected_attempts"],
                "expected_url": r["expected_url"],
                "new_updated_at": now,
                **{f"new_{c}": r[c] for c in values},
            }
            for r in rows
        ]
        in_transaction(self.engine, lambda conn: conn.execute(stmt, params))

    # -- clip_embeddings: results ------------------------------------------------------------------------------------

    def known_embeddings(self, model: str, urls: Iterable[str]) -> dict[str, sa.Row]:
        """Embeddings already paid for, by image URL: the newest indexed outcome of each URL for `model`."""
        wanted = set(urls)
        if not wanted:
            return {}
        o = self.table
        # Status is tested here, not in SQL: with it there, SQLite walks the (model, status) index over every
        # indexed outcome for each page, quadratic in the catalogue's size (BENCHMARKS.md item 6).
        query = sa.select(o.c.image_url, o.c.status, o.c.embedding, o.c.dimensions, o.c.updated_at).where(
            o.c.model == model, o.c.url_hash.in_([url_hash(u) for u in wanted])
        )
        found: dict[str, sa.Row] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                if row.status == INDEXED and row.image_url in wanted:
                    best = found.get(row.image_url)
                    if best is None or row.updated_at > best.updated_at:
                        found[row.image_url] = row
        return found

    def record(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store results (all rows with the same keys) in one transaction, and release their claims.

        Each row carries `expected_url`, the URL that was sent: an image whose path changed meanwhile keeps its
        new pending state.
        """
        if not rows:
            return
        o = self.table
        columns = [c for c in rows[0] if c not in ("product_image_id", "model", "expected_url")] + ["updated_at"]
        stmt = (
            sa.update(o)
            .where(
                o.c.product_image_id == sa.bindparam("key_image"),
                o.c.model == sa.bindparam("key_model"),
                o.c.image_url == sa.bindparam("key_url", type_=sa.Text),
            )
            .values(
                {
                    **{c: sa.bindparam(f"new_{c}", type_=o.c[c].type) for c in columns},
                    **dict.fromkeys(CLAIM_COLUMNS),
                    # A result settles what was sent; an image left pending may still have a prediction running.
                    "sent_at": sa.case((sa.bindparam("new_status") == PENDING, o.c.sent_at), else_=None),
                }
            )
        )
        now = utcnow()
        params = [
            {
                "key_image": r["product_image_id"],
                "key_model": r["model"],
                "key_url": r["expected_url"],
                "new_updated_at": now,
                **{f"new_{c}": v for c, v in r.items() if c not in ("product_image_id", "model", "expected_url")},
            }
            for r in rows
        ]
        in_transaction(self.engine, lambda conn: conn.execute(stmt, params))

    def quarantine(self, product_image_ids: Sequence[int], model: str, reason: str) -> None:
        """Mark outcomes failed so their embedding never reaches product_embeddings."""
        o = self.table
        in_transaction(
            self.engine,
            lambda conn: conn.execute(
                sa.update(o)
                .where(o.c.model == model, o.c.product_image_id.in_(list(product_image_ids)))
                .values(status=FAILED, error=reason, updated_at=utcnow())
            ),
        )

    def reset_failures(self, model: str) -> list[dt.date]:
        """Make failed images of `model` that have a URL retryable again (attempts 0); returns their days, with the
        days of images already pending (made retryable before, not yet run)."""
        self.schema.ensure_tables()
        o, i = self.table, self.schema.image
        retryable = sa.and_(o.c.model == model, o.c.status == FAILED, o.c.image_url.is_not(None))
        pending = sa.and_(o.c.model == model, o.c.status == PENDING)

        def work(conn: sa.Connection) -> list[dt.date]:
            found = sa.select(self.schema.raw(i.created_at)).select_from(
                o.join(self.schema.images, i.id == o.c.product_image_id)
            )
            rows = conn.execute(found.where(sa.or_(retryable, pending)))
            days = {as_instant(row[0]).date() for row in rows if as_instant(row[0])}
            conn.execute(
                sa.update(o)
                .where(retryable)
                .values(status=PENDING, attempts=0, updated_at=utcnow(), sent_at=None, **dict.fromkeys(CLAIM_COLUMNS))
            )
            return sorted(days)

        return in_transaction(self.engine, work)
