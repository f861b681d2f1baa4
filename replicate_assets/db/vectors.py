"""`clip_image_vectors`: search-ready copies of `product_embeddings` (unit float32), private to similarity.

`sync` copies what `product_embeddings` gained or changed and marks what it lost (`removed`), so the
similarity lists can be brought up to date incrementally: a vector whose `listed_at` is not its `updated_at` (to
the microsecond) is not yet in the lists as it is now; a `removed` one is still in some.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction, pages, upsert_statement
from replicate_assets.db.instants import as_instant, precise_now
from replicate_assets.db.schema import Schema
from replicate_assets.similarity.neighbours import Images
from replicate_assets.similarity.vectors import DTYPE, digest, from_bytes, parse_many, to_bytes
from replicate_assets.urls import url_hash

COLUMNS = ("product_image_id", "product_id", "model", "image_url", "url_hash", "digest", "published_at", "updated_at")
COLUMNS = (*COLUMNS, "removed", "vector")
KEY = ("product_image_id",)


@dataclasses.dataclass(frozen=True)
class Synced:
    copied: int  # vectors new or changed
    removed: int  # images gone from product_embeddings
    model_changed: bool  # every vector was of another model: lists must be rebuilt
    skipped: int  # embeddings that are not vectors of the model's length, or have no direction (never searchable)


@dataclasses.dataclass(frozen=True)
class Lag:
    """How far the similarity lists are behind product_embeddings."""

    images: int  # embeddings new or changed since the lists took them in, and images gone but still listed
    products: int
    oldest: dt.datetime | None  # product_embeddings.updated_at of the oldest such embedding (naive UTC)


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """The vectors of live products, with what the lists have not taken in yet."""

    images: Images
    unlisted: np.ndarray  # bool per image: new or changed since the lists were computed
    relisted: np.ndarray  # bool per image: changed (it was in the lists with another vector)
    gone_products: set[int]  # products whose images were removed or that were soft-deleted, still in lists
    hidden_products: set[int]  # products soft-deleted or gone from `products`: never in a list
    as_of: dt.datetime | None  # the newest change read: what `mark_listed` may stamp


class VectorStore:
    """Reads and writes of `clip_image_vectors` for one shop database."""

    def __init__(self, schema: Schema, dimensions: int = 768):
        self.schema, self.engine, self.table, self.dimensions = schema, schema.engine, schema.vectors, dimensions

    def sync(self, model: str, page_size: int = 1000) -> Synced:
        """Copy new and changed embeddings of `model`; mark removed ones. Idempotent."""
        self.schema.ensure_tables()
        v, e = self.table, self.schema.embeddings
        with self.engine.begin() as conn:
            model_changed = bool(
                conn.execute(sa.select(v.c.product_image_id).where(v.c.model != model).limit(1)).first()
            )
            if model_changed:
                conn.execute(sa.delete(v))
            gone = ~sa.select(e.c.id).where(e.c.product_image_id == v.c.product_image_id, e.c.model == model).exists()
            removed = conn.execute(
                sa.update(v).where(gone, v.c.removed.is_(False)).values(removed=True, updated_at=precise_now())
            ).rowcount
        changed = sa.or_(
            v.c.product_image_id.is_(None),
            v.c.published_at != e.c.updated_at,
            # product_embeddings keeps whole seconds: a republication within the same second shows in its URL or owner
            v.c.image_url.is_distinct_from(e.c.image_url),
            v.c.product_id != e.c.product_id,
            v.c.removed.is_(True),
            v.c.published_at.is_(None),
        )
        query = (
            sa.select(
                e.c.product_image_id,
                e.c.product_id,
                e.c.image_url,
                e.c.updated_at,
                # as stored, as text: a row other code wrote may be no JSON at all, and is skipped, not fatal
                _as_text(self.engine, e.c.embedding).label("embedding"),
            )
            .select_from(e.outerjoin(v, v.c.product_image_id == e.c.product_image_id))
            .where(e.c.model == model, changed)
        )
        copied = skipped = 0
        for page in pages(self.engine, query, e.c.product_image_id, page_size):
            matrix, usable = parse_many([row.embedding for row in page], self.dimensions)
            skipped += len(page) - int(usable.sum())
            now = precise_now()
            rows = [
                {
                    "product_image_id": row.product_image_id,
                    "product_id": row.product_id,
                    "model": model,
                    "image_url": row.image_url,
                    "url_hash": url_hash(row.image_url) if row.image_url else None,
                    "digest": digest(vector),
                    "published_at": row.updated_at,
                    "updated_at": now,
                    "removed": False,
                    "vector": to_bytes(vector),
                }
                for row, vector, ok in zip(page, matrix, usable.tolist(), strict=True)
                if ok
            ]
            if rows:
                in_transaction(
                    self.engine, lambda conn, rows=rows: conn.execute(upsert_statement(conn, v, COLUMNS, KEY), rows)
                )
                copied += len(rows)
        return Synced(copied, removed, model_changed, skipped)

    def lag(self, model: str) -> Lag:
        """What the lists have not taken in yet: embeddings of live products not copied, copied but not listed, and
        removed images still listed (read-only; two aggregate queries)."""
        v, e = self.table, self.schema.embeddings
        unlisted = sa.or_(
            v.c.product_image_id.is_(None),
            v.c.published_at.is_distinct_from(e.c.updated_at),
            v.c.listed_at.is_(None),
            v.c.listed_at != v.c.updated_at,
        )
        p = self.schema.products
        behind = (
            sa.select(sa.func.count(), sa.func.count(sa.distinct(e.c.product_id)), sa.func.min(e.c.updated_at))
            .select_from(e.join(p, p.c.id == e.c.product_id).outerjoin(v, v.c.product_image_id == e.c.product_image_id))
            .where(e.c.model == model, unlisted)
        )
        if self.schema.has_deleted_at:  # a soft-deleted product's images are never listed: nothing to wait for
            behind = behind.where(p.c.deleted_at.is_(None))
        gone = sa.select(sa.func.count(), sa.func.count(sa.distinct(v.c.product_id)), sa.func.min(v.c.updated_at))
        gone = gone.where(v.c.model == model, v.c.removed.is_(True))
        with self.engine.connect() as conn:
            images, products, oldest = conn.execute(behind).one()
            gone_images, gone_products, gone_since = conn.execute(gone).one()
        stamps = [as_instant(t) for t in (oldest, gone_since) if t is not None]
        return Lag(images + gone_images, products + gone_products, min(stamps) if stamps else None)

    def catalogue(self, model: str) -> Catalogue:
        """Every vector of `model` whose product is live, and what changed since the lists were computed."""
        self.schema.ensure_tables()
        v, p = self.table, self.schema.products
        deleted = p.c.deleted_at.is_not(None) if self.schema.has_deleted_at else sa.false()
        query = (
            sa.select(
                v.c.product_image_id,
                v.c.product_id,
                v.c.url_hash,
                v.c.digest,
                # compared in SQL: parsing two timestamps per row costs more than the rest of the read
                v.c.listed_at.is_not(None).label("was_listed"),
                sa.or_(v.c.listed_at.is_(None), v.c.listed_at != v.c.updated_at).label("unlisted"),
                v.c.removed,
                sa.case((deleted, True), else_=sa.null()).label("deleted"),
                p.c.id.label("product_found"),
                v.c.vector,
            )
            .select_from(v.outerjoin(p, p.c.id == v.c.product_id))
            .where(v.c.model == model)
            .order_by(v.c.product_image_id)
        )
        with self.engine.connect() as conn:
            # first: a vector that changes while the rows are read is newer than `as_of`, so it stays unlisted
            as_of = conn.execute(sa.select(sa.func.max(v.c.updated_at)).where(v.c.model == model)).scalar()
            expected = conn.execute(sa.select(sa.func.count()).where(v.c.model == model)).scalar() or 0
            read = _Reader(expected, self.dimensions)
            for chunk in conn.execution_options(stream_results=True, yield_per=10_000).execute(query).partitions():
                read.add(chunk)
        return read.catalogue(as_of)

    def product_vectors(self, model: str, product_id: int) -> np.ndarray:
        """The live vectors of one product (none when it is unknown, soft-deleted or has no embedding)."""
        v, p = self.table, self.schema.products
        query = (
            sa.select(v.c.vector)
            .join(p, p.c.id == v.c.product_id)
            .where(v.c.model == model, v.c.product_id == product_id, v.c.removed.is_(False))
            .order_by(v.c.product_image_id)
        )
        if self.schema.has_deleted_at:
            query = query.where(p.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return from_bytes(list(conn.execute(query).scalars()), self.dimensions)

    def mark_listed(self, model: str, catalogue: Catalogue) -> None:
        """The lists now reflect `catalogue`: stamp its vectors (not those changed since), drop its removed ones,
        and unstamp hidden products' vectors (were one restored, its lists would be computed as new)."""
        v = self.table
        if catalogue.as_of is None:
            return
        read = (v.c.model == model, v.c.updated_at <= catalogue.as_of)
        hidden = sorted(catalogue.hidden_products)

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.delete(v).where(*read, v.c.removed.is_(True)))
            stale = sa.or_(v.c.listed_at.is_(None), v.c.listed_at != v.c.updated_at)  # rewrite only what changed
            conn.execute(sa.update(v).where(*read, stale).values(listed_at=v.c.updated_at))
            for lo in range(0, len(hidden), 1000):
                conn.execute(sa.update(v).where(v.c.product_id.in_(hidden[lo : lo + 1000])).values(listed_at=None))

        in_transaction(self.engine, work)


def _as_text(engine: sa.Engine, column: sa.ColumnElement) -> sa.ColumnElement:
    """A JSON column as its text: PostgreSQL's driver would parse it into Python lists (slower than `parse_many`)."""
    if engine.dialect.name == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


class _Reader:
    """Rows of `VectorStore.catalogue` as they stream in, their vectors straight into one preallocated matrix (a
    million vectors are 3 GB: they are never held twice)."""

    def __init__(self, expected: int, dimensions: int):
        self.vectors = np.empty((expected, dimensions), dtype=DTYPE)
        self.size, self.columns = 0, {name: [] for name in ("ids", "products", "digests", "url_hashes", "unlisted")}
        self.relisted: list[bool] = []
        self.gone: set[int] = set()
        self.hidden: set[int] = set()

    def add(self, rows) -> None:
        live = []
        for r in rows:
            if r.removed or r.deleted or r.product_found is None:
                if r.was_listed:
                    self.gone.add(int(r.product_id))
                if r.deleted or r.product_found is None:
                    self.hidden.add(int(r.product_id))
                continue
            live.append(r)
        if self.size + len(live) > len(self.vectors):  # rows added since they were counted
            grown = np.empty((max(2 * len(self.vectors), self.size + len(live)), self.vectors.shape[1]), DTYPE)
            grown[: self.size] = self.vectors[: self.size]
            self.vectors = grown
        self.vectors[self.size : self.size + len(live)] = from_bytes([r.vector for r in live], self.vectors.shape[1])
        self.size += len(live)
        c = self.columns
        for r in live:
            c["ids"].append(r.product_image_id), c["products"].append(r.product_id), c["digests"].append(r.digest)
            c["url_hashes"].append(r.url_hash), c["unlisted"].append(bool(r.unlisted))
            self.relisted.append(bool(r.was_listed and r.unlisted))

    def catalogue(self, as_of) -> Catalogue:
        c = self.columns
        images = Images(
            np.array(c["ids"], dtype=np.int64),
            np.array(c["products"], dtype=np.int64),
            self.vectors[: self.size],
            np.array(c["digests"], dtype=object),
            np.array(c["url_hashes"], dtype=object),
        )
        unlisted, relisted = np.array(c["unlisted"], dtype=bool), np.array(self.relisted, dtype=bool)
        return Catalogue(images, unlisted, relisted, self.gone, self.hidden, as_of)
