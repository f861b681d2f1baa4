"""Read-only questions about the shop and our tables: for metadata, checks, sensors and the `status` command.

Nothing here writes. Before the first run or `migrate` our tables do not exist; the answers then say so (zero
outcomes, no embeddings) instead of creating them.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from replicate_assets.db.instants import as_instant
from replicate_assets.db.schema import FAILED, INDEXED, PENDING, Schema, Window

STATUSES = (PENDING, INDEXED, FAILED)


class Reports:
    """Counts and lists over one shop database."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.engine = schema.engine
        self._ours_exist = False

    @property
    def ours_exist(self) -> bool:
        """Whether our tables exist yet (once they do, they stay: only that answer is remembered)."""
        self._ours_exist = self._ours_exist or not self.schema.missing_tables()
        return self._ours_exist

    def window_summary(self, window: Window, model: str) -> dict[str, int]:
        """Images and products in the window, images by outcome, products with an embedding from `model`."""
        s, i, o, e = self.schema, self.schema.image, self.schema.outcomes, self.schema.embeddings
        in_window = s.in_window(window)
        counts = dict.fromkeys(STATUSES, 0)
        with self.engine.connect() as conn:
            images, products = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(i.product_id))).where(*in_window)
            ).one()
            embedded = 0
            if self.ours_exist:
                for status, count in conn.execute(
                    sa.select(o.c.status, sa.func.count())
                    .select_from(o.join(s.images, i.id == o.c.product_image_id))
                    .where(o.c.model == model, *in_window)
                    .group_by(o.c.status)
                ):
                    counts[status] = count
                embedded = conn.execute(
                    sa.select(sa.func.count(sa.distinct(e.c.product_id)))
                    .select_from(e.join(s.images, i.id == e.c.product_image_id))
                    .where(e.c.model == model, *in_window)
                ).scalar_one()
        return {"images": images, "products": products, "products_embedded": embedded, **counts}

    def products_without_embeddings(self, window: Window, model: str) -> dict[int, set[dt.date]]:
        """Products with images in the window but no embedding from `model`, with the days of those images.

        Images whose product does not exist (orphans) are not counted: see `orphans`.
        """
        s, i, e = self.schema, self.schema.image, self.schema.embeddings
        query = (
            sa.select(i.product_id, s.raw(i.created_at))
            .select_from(s.images.join(s.products, s.products.c.id == i.product_id))
            .where(*s.in_window(window))
        )
        if self.ours_exist:
            has_embedding = sa.select(e.c.id).where(e.c.product_id == i.product_id, e.c.model == model).exists()
            query = query.where(~has_embedding)
        found: dict[int, set[dt.date]] = {}
        with self.engine.connect() as conn:
            for product_id, created_at in conn.execute(query):
                day = as_instant(created_at)
                found.setdefault(product_id, set()).update([day.date()] if day else [])
        return dict(sorted(found.items()))

    def failed_products(self, products: list[int], window: Window, model: str) -> dict[int, list[str]]:
        """Of `products`, those whose every image in the window failed (a known, logged reason), with the reasons."""
        if not products or not self.ours_exist:
            return {}
        s, i, o = self.schema, self.schema.image, self.schema.outcomes
        query = (
            sa.select(i.product_id, o.c.status, o.c.error)
            .select_from(s.images.outerjoin(o, sa.and_(o.c.product_image_id == i.id, o.c.model == model)))
            .where(i.product_id.in_(products), *s.in_window(window))
        )
        reasons: dict[int, list[str]] = {}
        unexplained: set[int] = set()
        with self.engine.connect() as conn:
            for product_id, status, error in conn.execute(query):
                if status == FAILED and error:
                    reasons.setdefault(product_id, []).append(error)
                else:
                    unexplained.add(product_id)
        return {p: why for p, why in reasons.items() if p not in unexplained}

    def products_without_images(self) -> int:
        p, i = self.schema.products, self.schema.image
        query = sa.select(sa.func.count()).select_from(p).where(~sa.select(i.id).where(i.product_id == p.c.id).exists())
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def orphans(self, window: Window | None = None, limit: int = 20) -> tuple[int, list[int]]:
        """Images whose product_id names no product (a shop without enforced foreign keys): count, first ids."""
        s, i, p = self.schema, self.schema.image, self.schema.products
        where = [~sa.select(p.c.id).where(p.c.id == i.product_id).exists(), *s.in_window(window or Window())]
        with self.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(s.images).where(*where)).scalar_one()
            first = conn.execute(sa.select(i.id).where(*where).order_by(i.id).limit(limit)).scalars().all()
        return count, list(first)

    def uncovered(self, first_day: dt.date, last_day: dt.date) -> dict[str, int]:
        """Images no daily partition covers: created before the first day, after the last, or with no created_at."""
        s, i = self.schema, self.schema.image
        start = dt.datetime.combine(first_day, dt.time())
        end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time())
        with self.engine.connect() as conn:

            def count(*where: sa.ColumnElement) -> int:
                return conn.execute(sa.select(sa.func.count()).select_from(s.images).where(*where)).scalar_one()

            return {
                "before_start": count(s.instant(i.created_at) < s.instant(start)),
                "in_the_future": count(s.instant(i.created_at) >= s.instant(end)),
                "without_created_at": count(i.created_at.is_(None)),
            }

    def gave_up(self, max_attempts: int) -> sa.ColumnElement:
        """A failed image that is not tried again until its row changes: never sendable, or attempts used up
        (as many as the run that failed it allowed, else `max_attempts`)."""
        o = self.schema.outcomes
        allowed = sa.func.coalesce(o.c.max_attempts, max_attempts)
        return sa.and_(o.c.status == FAILED, sa.or_(o.c.image_url.is_(None), o.c.attempts >= allowed))

    def failure_reasons(self, window: Window, model: str, max_attempts: int) -> list[sa.Row]:
        """Images of the window that failed for good: (product_image_id, error)."""
        if not self.ours_exist:
            return []
        s, o, i = self.schema, self.schema.outcomes, self.schema.image
        query = (
            sa.select(o.c.product_image_id, o.c.error)
            .select_from(o.join(s.images, i.id == o.c.product_image_id))
            .where(o.c.model == model, self.gave_up(max_attempts), *s.in_window(window))
            .order_by(o.c.product_image_id)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def status(self) -> dict[str, dict[str, int]]:
        """Per model: embeddings stored, distinct products, images indexed / pending / failed."""
        if not self.ours_exist:
            return {}
        o, e = self.schema.outcomes, self.schema.embeddings
        report: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for model, count, products in conn.execute(
                sa.select(e.c.model, sa.func.count(), sa.func.count(sa.distinct(e.c.product_id))).group_by(e.c.model)
            ):
                report.setdefault(model, {}).update(embeddings=count, products=products)
            for model, status, count in conn.execute(
                sa.select(o.c.model, o.c.status, sa.func.count()).group_by(o.c.model, o.c.status)
            ):
                report.setdefault(model, {})[f"images_{status}"] = count
        for counts in report.values():
            for key in ("embeddings", "products", *(f"images_{s}" for s in STATUSES)):
                counts.setdefault(key, 0)
        return report

    def failed_images(self, model: str | None = None, limit: int = 100) -> list[sa.Row]:
        if not self.ours_exist:
            return []
        o = self.schema.outcomes
        query = sa.select(
            o.c.product_image_id,
            o.c.product_id,
            o.c.model,
            o.c.attempts,
            o.c.max_attempts,
            o.c.image_url.is_(None).label("never_sent"),
            o.c.error,
            o.c.updated_at,
        ).where(o.c.status == FAILED)
        if model:
            query = query.where(o.c.model == model)
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(o.c.product_image_id).limit(limit)).all()
