"""What changed in the shop, and which days still have work: the questions the sensors ask. Read-only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa

from replicate_assets.db.embeddings import stale
from replicate_assets.db.instants import as_instant
from replicate_assets.db.reports import Reports
from replicate_assets.db.schema import FAILED, INDEXED, PENDING


class Changes(Reports):
    """The sensors' view of one shop database: new or changed images, and days with images still to embed."""

    def now(self) -> dt.datetime:
        """The database's clock, as naive UTC (sessions are pinned to UTC): what the shop's rows are dated by."""
        with self.engine.connect() as conn:
            return as_instant(conn.execute(sa.select(sa.func.current_timestamp())).scalar())

    def changed_images(
        self, after: tuple[dt.datetime, int] | None, limit: int
    ) -> list[tuple[int, dt.datetime | None, dt.datetime]]:
        """Images created or changed after the cursor (updated_at, id), oldest first: (id, created_at, updated_at)."""
        s, i = self.schema, self.schema.image
        query = sa.select(i.id, s.raw(i.created_at), s.raw(i.updated_at)).where(i.updated_at.is_not(None))
        if after is not None:
            stamp, last_id = after
            updated, stamp = s.instant(i.updated_at), s.instant(stamp)
            query = query.where(sa.or_(updated > stamp, sa.and_(updated == stamp, i.id > last_id)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(s.instant(i.updated_at), i.id).limit(limit)).all()
        return [(row[0], as_instant(row[1]), as_instant(row[2])) for row in rows if as_instant(row[2])]

    def days_needing_work(
        self, model: str, max_attempts: int, retry_delay_seconds: float, now: dt.datetime
    ) -> set[dt.date]:
        """Days (of created_at) holding images with work to do: never seen, pending, changed since their outcome,
        not yet published, or failed with a retry due (delay x 2^(attempts-1) after the last attempt)."""
        s, i = self.schema, self.schema.image
        if not self.ours_exist:
            return _days(self._created(sa.select(s.raw(i.created_at))))
        o, e = self.schema.outcomes, self.schema.embeddings
        joined = (
            s.images.join(s.products, s.products.c.id == i.product_id)
            .outerjoin(o, sa.and_(o.c.product_image_id == i.id, o.c.model == model))
            .outerjoin(e, e.c.product_image_id == i.id)
        )
        needs_work = sa.or_(
            sa.and_(o.c.status.is_(None), sa.or_(e.c.id.is_(None), e.c.model != model)),
            o.c.status == PENDING,
            sa.and_(o.c.status.is_not(None), s.instant(o.c.image_updated_at) != s.instant(i.updated_at)),
            sa.and_(o.c.status == INDEXED, stale(s, model)),
        )
        days = _days(self._created(sa.select(s.raw(i.created_at)).select_from(joined).where(needs_work)))
        retryable = (
            sa.select(s.raw(i.created_at), o.c.attempts, o.c.updated_at)
            .select_from(joined)
            .where(o.c.status == FAILED, ~self.gave_up(max_attempts))
        )
        with self.engine.connect() as conn:
            for created_at, attempts, updated_at in conn.execute(retryable):
                if updated_at + dt.timedelta(seconds=retry_delay_seconds * 2 ** max(attempts - 1, 0)) <= now:
                    days |= _days([created_at])
        return days

    def _created(self, query: sa.Select) -> list:
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query.where(self.schema.image.created_at.is_not(None)))]


def _days(stamps: Iterable) -> set[dt.date]:
    return {instant.date() for instant in map(as_instant, stamps) if instant is not None}
