"""Read-only questions the review page asks: a product and its images, its duplicates, a random sample of listed
products, products without neighbours, and an image's path (for its thumbnail). Nothing here writes."""

from __future__ import annotations

import dataclasses
import random

import sqlalchemy as sa

from replicate_assets.db.schema import Schema


@dataclasses.dataclass(frozen=True)
class Product:
    id: int
    name: str | None
    image_ids: list[int]


class Browse:
    def __init__(self, schema: Schema, model: str):
        self.schema, self.model = schema, model

    def _live(self) -> list[sa.ColumnElement]:
        p = self.schema.products
        return [p.c.deleted_at.is_(None)] if self.schema.has_deleted_at else []

    def products(self, ids: list[int]) -> dict[int, Product]:
        """Live products by id, with their names and images (by id); deleted or unknown ones are left out."""
        if not ids:
            return {}
        p, i = self.schema.products, self.schema.image
        name = p.c.name if "name" in p.c else sa.null()
        with self.schema.engine.connect() as conn:
            rows = conn.execute(sa.select(p.c.id, name).where(p.c.id.in_(ids), *self._live())).all()
            found = {int(r[0]): Product(int(r[0]), r[1], []) for r in rows}
            images = conn.execute(
                sa.select(i.product_id, i.id).where(i.product_id.in_(list(found))).order_by(i.product_id, i.id)
            )
            for product, image in images:
                found[int(product)].image_ids.append(int(image))
        return found

    def duplicates(self, product_id: int) -> list[tuple[int, str]]:
        d = self.schema.duplicates
        with self.schema.engine.connect() as conn:
            return [
                (int(other), reason)
                for other, reason in conn.execute(
                    sa.select(d.c.duplicate_product_id, d.c.reason)
                    .where(d.c.product_id == product_id, d.c.model == self.model)
                    .order_by(d.c.duplicate_product_id)
                )
            ]

    def sample(self, count: int, rng: random.Random) -> list[int]:
        """`count` products drawn at random among those with a list (one query for the ids, then a draw)."""
        s = self.schema.similarities
        with self.schema.engine.connect() as conn:
            listed = conn.execute(sa.select(s.c.product_id).where(s.c.model == self.model, s.c.rank == 1)).scalars()
            ids = sorted(int(x) for x in listed)
        return sorted(rng.sample(ids, min(count, len(ids))))

    def without_neighbours(self, limit: int) -> list[int]:
        """Live products with an embedding but no list: nothing similar was found, or the lists are behind."""
        e, s, p = self.schema.embeddings, self.schema.similarities, self.schema.products
        listed = sa.select(s.c.product_id).where(s.c.product_id == e.c.product_id, s.c.model == self.model)
        query = (
            sa.select(e.c.product_id)
            .join(p, p.c.id == e.c.product_id)
            .where(e.c.model == self.model, ~listed.exists(), *self._live())
            .group_by(e.c.product_id)
            .order_by(e.c.product_id)
            .limit(limit)
        )
        with self.schema.engine.connect() as conn:
            return [int(x) for x in conn.execute(query).scalars()]

    def image_path(self, image_id: int) -> str | None:
        """The image's path as the shop stores it; LookupError when there is no such image."""
        i = self.schema.image
        with self.schema.engine.connect() as conn:
            row = conn.execute(sa.select(i.path).where(i.id == image_id)).first()
        if row is None:
            raise LookupError(f"no product image {image_id}")
        return row[0]
