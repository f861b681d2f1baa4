"""Claims on `clip_embedding_outcomes`: the database is the arbiter between runs that embed the same images.

An image is embedded by the run that holds its claim, and every pending image that shares its URL is claimed with
it (a URL is paid for once). A claim lapses at `claim_expires_at` unless its run renews it (`heartbeat`), so a
dead run's claims free themselves; a run on the same host frees those of a process it knows is gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction, pages
from replicate_assets.db.instants import utcnow
from replicate_assets.db.outcomes import CLAIM_COLUMNS
from replicate_assets.db.schema import PENDING, Schema, Window


class Claims:
    """Pending images, and who is embedding them, for one shop database."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.engine = schema.engine
        self.table = schema.outcomes

    def pending_pages(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the window's images whose outcome for `model` is pending, with their claims."""
        self.schema.ensure_tables()
        o = self.table
        query = (
            sa.select(*self._pending_columns())
            .select_from(o.join(self.schema.images, self.schema.image.id == o.c.product_image_id))
            .where(o.c.model == model, o.c.status == PENDING, *self.schema.in_window(window))
        )
        yield from pages(self.engine, query, o.c.product_image_id, page_size)

    def _pending_columns(self) -> list[sa.Column]:
        o = self.table
        names = (
            "product_image_id",
            "product_id",
            "image_url",
            "image_updated_at",
            "attempts",
            *CLAIM_COLUMNS,
            "sent_at",
        )
        return [o.c[name] for name in names]

    def resume_candidates(self, window: Window, model: str, since: dt.datetime) -> list[sa.Row]:
        """Pending images of the window for which a create may have been sent since `since` (a run that stopped
        or died, or an earlier attempt of this step): their predictions may exist and be taken over."""
        self.schema.ensure_tables()
        o = self.table
        query = (
            sa.select(*self._pending_columns())
            .select_from(o.join(self.schema.images, self.schema.image.id == o.c.product_image_id))
            .where(
                o.c.model == model,
                o.c.status == PENDING,
                o.c.sent_at >= since,
                o.c.image_url.is_not(None),
                *self.schema.in_window(window),
            )
            .order_by(o.c.product_image_id)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def claim(
        self,
        ids: Iterable[int],
        model: str,
        owner: str,
        process: str,
        ttl: dt.timedelta,
        dead_processes: Iterable[str] = (),
    ) -> set[int]:
        """Claim the pending images `ids` for `owner`, with every pending image that shares one of their URLs (an
        URL is paid for once, by the run that holds all its rows): those unclaimed, claimed by `owner` already,
        whose claim expired, or held by a process known to be dead. Returns the ids of `ids` `owner` now holds."""
        ids, dead = list(ids), sorted(set(dead_processes))
        if not ids:
            return set()
        o, now = self.table, utcnow()
        free = [o.c.claimed_by.is_(None), o.c.claimed_by == owner, o.c.claim_expires_at < now]
        if dead:
            free.append(o.c.claim_process.in_(dead))
        pending = [o.c.model == model, o.c.status == PENDING]
        hashes = sa.select(o.c.url_hash).where(o.c.model == model, o.c.product_image_id.in_(ids))
        if self.schema.dialect == "mysql":  # MySQL cannot read the table it updates in a subquery
            hashes = sa.select(hashes.subquery().c.url_hash)

        def work(conn: sa.Connection) -> set[int]:
            conn.execute(
                sa.update(o)
                .where(*pending, sa.or_(o.c.product_image_id.in_(ids), o.c.url_hash.in_(hashes)), sa.or_(*free))
                .values(claimed_by=owner, claim_process=process, claim_expires_at=now + ttl, sent_at=now)
            )
            held = sa.select(o.c.product_image_id).where(
                *pending, o.c.product_image_id.in_(ids), o.c.claimed_by == owner
            )
            return {row[0] for row in conn.execute(held)}

        return in_transaction(self.engine, work)

    def heartbeat(self, owner: str, ttl: dt.timedelta) -> None:
        """Renew `owner`'s claims, so they outlive a long run but not a dead one."""
        o = self.table
        in_transaction(
            self.engine,
            lambda conn: conn.execute(
                sa.update(o)
                .where(o.c.claimed_by == owner, o.c.status == PENDING)
                .values(claim_expires_at=utcnow() + ttl)
            ),
        )

    def release(self, owner: str) -> None:
        """Give up `owner`'s claims (their images stay pending, for the next run)."""
        o = self.table
        in_transaction(
            self.engine,
            lambda conn: conn.execute(
                sa.update(o).where(o.c.claimed_by == owner).values(**dict.fromkeys(CLAIM_COLUMNS))
            ),
        )
