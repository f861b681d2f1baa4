"""The shop database: its `products` / `product_images` tables and the two tables we own.

`clip_embedding_outcomes` records every image's outcome per model (pending, indexed or failed, with the
reason and the attempts); `product_embeddings` is what the shop reads. Both are created on first use.
Works on SQLite, PostgreSQL and MySQL/MariaDB through SQLAlchemy 2 Core.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

OUTCOMES = "clip_embedding_outcomes"
EMBEDDINGS = "product_embeddings"
PENDING, INDEXED, FAILED = "pending", "indexed", "failed"


class CatalogueError(RuntimeError):
    """The shop database is unreachable or lacks the tables we need; the message says what to do."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Timestamps are compared as naive UTC, the way Laravel stores them."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def resolve_image_url(path: str | None, image_base_url: str | None) -> tuple[str | None, str | None]:
    """Return (url, None) for a usable image path, or (None, reason) for one that cannot be sent."""
    if path is None:
        return None, "invalid image path: the path is null"
    if not path.strip():
        return None, "invalid image path: the path is empty"
    path = path.strip()
    scheme = urlsplit(path).scheme.lower()
    if scheme in ("http", "https"):
        return path, None
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive, i.e. a relative-looking path
        return None, f"invalid image path: {scheme}:// URLs cannot be fetched by Replicate, use http(s)"
    if not image_base_url:
        # The reason is stored and shown: a signed path's query string stays out of it.
        return None, f"invalid image path: {urlsplit(path).path!r} is relative and IMAGE_BASE_URL is not set"
    return f"{image_base_url.rstrip('/')}/{path.lstrip('/')}", None


def normalise_url(url: str) -> str:
    """Give SQLAlchemy an explicit driver: SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3."""
    for bare, explicit in (
        ("postgresql://", "postgresql+psycopg2://"),
        ("postgres://", "postgresql+psycopg2://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
    ):
        if url.startswith(bare):
            return explicit + url[len(bare) :]
    return url


@functools.lru_cache(maxsize=16)
def engine_for(url: str) -> sa.Engine:
    url = normalise_url(url)
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    engine = sa.create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")  # for ON DELETE CASCADE
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (status, checks) beside a running write
            cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: safe from a killed process, one fsync less
            cursor.execute("PRAGMA cache_size=-16384")  # 16 MB a connection: embeddings are 7-8 kB each
            cursor.close()

    return engine


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end) of `product_images.created_at`; None bounds are open."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @classmethod
    def of(cls, time_window: dg.TimeWindow) -> Window:
        return cls(naive_utc(time_window.start), naive_utc(time_window.end))


class Catalogue:
    """Queries and writes on one shop database. Build it with `Catalogue.connect(url)`."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.metadata = sa.MetaData()
        try:
            self.products = sa.Table("products", self.metadata, autoload_with=engine)
            self.images = sa.Table("product_images", self.metadata, autoload_with=engine)
        except sa.exc.NoSuchTableError as err:
            raise CatalogueError(
                f"the shop database {engine.url.render_as_string(hide_password=True)} has no table {err}: "
                "point DATABASE_URL at the shop's database (the one with products and product_images)"
            ) from None
        except sa.exc.OperationalError as err:
            raise CatalogueError(
                f"cannot connect to the shop database {engine.url.render_as_string(hide_password=True)}: "
                f"{err.orig}. Check DATABASE_URL and that the server is running"
            ) from None
        # Our foreign keys copy the referenced column types: Laravel's ids are BIGINT UNSIGNED on MySQL.
        product_id_type = self.products.c.id.type
        image_id_type = self.images.c.id.type
        id_type = sa.BigInteger().with_variant(sa.Integer, "sqlite")
        self.outcomes = sa.Table(
            OUTCOMES,
            self.metadata,
            sa.Column(
                "product_image_id",
                image_id_type,
                sa.ForeignKey("product_images.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("model", sa.String(191), primary_key=True),
            sa.Column("product_id", product_id_type, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("url_hash", sa.String(64)),
            sa.Column("image_updated_at", sa.DateTime),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("dimensions", sa.Integer),
            sa.Column("error", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("predict_time", sa.Float),
            sa.Column("prediction_id", sa.String(64)),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
            # Large values last: SQLite reads the columns before them without walking overflow pages.
            sa.Column("embedding", sa.JSON),
            sa.Index("ix_clip_embedding_outcomes_model_url", "model", "url_hash"),
            # Pages of one status are read in product_image_id order: the index serves both the filter and the order.
            sa.Index("ix_clip_embedding_outcomes_model_status", "model", "status", "product_image_id"),
            mysql_engine="InnoDB",
        )
        self.embeddings = sa.Table(
            EMBEDDINGS,
            self.metadata,
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
                image_id_type,
                sa.ForeignKey("product_images.id", ondelete="CASCADE"),
                nullable=False,
                unique=True,
            ),
            sa.Column("model", sa.String(191), nullable=False),
            sa.Column("dimensions", sa.Integer, nullable=False),
            sa.Column("image_url", sa.Text),
            sa.Column("created_at", sa.DateTime),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("embedding", sa.JSON, nullable=False),
            mysql_engine="InnoDB",
        )
        self._migrated = False
        self._sqlite = engine.dialect.name == "sqlite"

    def _instant(self, value: sa.ColumnElement | dt.datetime) -> sa.ColumnElement:
        """A timestamp to compare as an instant. SQLite keeps text in whatever format its writer chose
        (Laravel: '2025-01-15 10:30:45', SQLAlchemy: '2025-01-15 10:30:45.000000'): compare julianday()."""
        if isinstance(value, dt.datetime):
            value = sa.literal(
                value.isoformat(sep=" ") if self._sqlite else value, sa.String if self._sqlite else sa.DateTime
            )
        return sa.func.julianday(value) if self._sqlite else value

    def _in(self, window: Window, column: sa.ColumnElement) -> list[sa.ColumnElement]:
        clauses = []
        if window.start is not None:
            clauses.append(self._instant(column) >= self._instant(window.start))
        if window.end is not None:
            clauses.append(self._instant(column) < self._instant(window.end))
        return clauses

    @classmethod
    def connect(cls, url: str) -> Catalogue:
        return cls(engine_for(url))

    def migrate(self) -> list[str]:
        """Create our tables where missing; idempotent. Returns the names of the tables created."""
        existing = set(sa.inspect(self.engine).get_table_names())
        created = [t.name for t in (self.outcomes, self.embeddings) if t.name not in existing]
        self.metadata.create_all(self.engine, tables=[self.outcomes, self.embeddings], checkfirst=True)
        self._migrated = True
        return created

    def ensure_tables(self) -> None:
        if not self._migrated:
            self.migrate()

    # -- product_images -------------------------------------------------------------------------------------

    def window_images(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the window's images, each with its outcome and stored embedding for `model`, if any."""
        self.ensure_tables()
        i, o, e = self.images, self.outcomes, self.embeddings
        query = (
            sa.select(
                i.c.id,
                i.c.product_id,
                i.c.path,
                i.c.updated_at,
                o.c.status,
                o.c.image_url.label("outcome_url"),
                o.c.image_updated_at,
                o.c.attempts,
                e.c.model.label("embedding_model"),
                e.c.image_url.label("embedding_url"),
                e.c.updated_at.label("embedding_updated_at"),
            )
            .select_from(
                i.outerjoin(o, sa.and_(o.c.product_image_id == i.c.id, o.c.model == model)).outerjoin(
                    e, e.c.product_image_id == i.c.id
                )
            )
            .where(*self._in(window, i.c.created_at))
        )
        yield from self._pages(query, i.c.id, page_size)

    def _pages(self, query: sa.Select, key: sa.ColumnElement, page_size: int) -> Iterator[list[sa.Row]]:
        """Keyset pagination: memory stays bounded by the page, whatever the window holds."""
        last = None
        while True:
            page_query = query.order_by(key).limit(page_size)
            if last is not None:
                page_query = page_query.where(key > last)
            with self.engine.connect() as conn:
                rows = conn.execute(page_query).all()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def save_outcomes(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert outcome rows keyed by (product_image_id, model), in one transaction."""
        if not rows:
            return
        self.ensure_tables()
        now = utcnow()
        rows = [{"created_at": now, "updated_at": now, **row} for row in rows]
        with self.engine.begin() as conn:
            upsert(conn, self.outcomes, rows, keys=("product_image_id", "model"), keep=("created_at",))

    def window_summary(self, window: Window, model: str) -> dict[str, int]:
        """Counts for metadata: images and products in the window, images by outcome, products embedded."""
        self.ensure_tables()
        i, o, e = self.images, self.outcomes, self.embeddings
        in_window = self._in(window, i.c.created_at)
        counts = {PENDING: 0, INDEXED: 0, FAILED: 0}
        with self.engine.connect() as conn:
            images, products = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(i.c.product_id))).where(*in_window)
            ).one()
            for status, count in conn.execute(
                sa.select(o.c.status, sa.func.count())
                .select_from(o.join(i, i.c.id == o.c.product_image_id))
                .where(o.c.model == model, *in_window)
                .group_by(o.c.status)
            ):
                counts[status] = count
            embedded = conn.execute(
                sa.select(sa.func.count(sa.distinct(e.c.product_id)))
                .select_from(e.join(i, i.c.id == e.c.product_image_id))
                .where(e.c.model == model, *in_window)
            ).scalar_one()
        return {"images": images, "products": products, "products_embedded": embedded, **counts}

    # -- clip_embeddings ------------------------------------------------------------------------------------

    def pending_images(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the window's images whose outcome for `model` is pending."""
        self.ensure_tables()
        o, i = self.outcomes, self.images
        query = (
            sa.select(o.c.product_image_id, o.c.product_id, o.c.image_url, o.c.image_updated_at, o.c.attempts)
            .select_from(o.join(i, i.c.id == o.c.product_image_id))
            .where(o.c.model == model, o.c.status == PENDING, *self._in(window, i.c.created_at))
        )
        yield from self._pages(query, o.c.product_image_id, page_size)

    def known_embeddings(self, model: str, urls: Iterable[str]) -> dict[str, sa.Row]:
        """Embeddings already paid for, by image URL: the newest indexed outcome of each URL for `model`."""
        wanted = set(urls)
        if not wanted:
            return {}
        o = self.outcomes
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

    def update_outcomes(self, rows: Sequence[dict[str, Any]]) -> None:
        """Record the outcomes of existing rows (all with the same keys), in one transaction."""
        if not rows:
            return
        o = self.outcomes
        columns = [c for c in rows[0] if c not in ("product_image_id", "model")] + ["updated_at"]
        stmt = (
            sa.update(o)
            .where(o.c.product_image_id == sa.bindparam("key_image"), o.c.model == sa.bindparam("key_model"))
            .values({c: sa.bindparam(f"new_{c}", type_=o.c[c].type) for c in columns})
        )
        now = utcnow()
        params = [
            {
                "key_image": r["product_image_id"],
                "key_model": r["model"],
                "new_updated_at": now,
                **{f"new_{c}": v for c, v in r.items() if c not in ("product_image_id", "model")},
            }
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(stmt, params)

    # -- embedding_table ------------------------------------------------------------------------------------

    def _unpublished(self, window: Window, model: str) -> tuple[sa.FromClause, list[sa.ColumnElement]]:
        """Indexed outcomes of the window whose product_embeddings row is missing or older: (from, where)."""
        o, i, e = self.outcomes, self.images, self.embeddings
        joined = o.join(i, i.c.id == o.c.product_image_id).outerjoin(e, e.c.product_image_id == o.c.product_image_id)
        return joined, [
            o.c.model == model,
            o.c.status == INDEXED,
            *self._in(window, i.c.created_at),
            self._stale(model),
        ]

    def _stale(self, model: str) -> sa.ColumnElement:
        """The outcome's embedding is not (or no longer) what product_embeddings holds for its image."""
        o, e = self.outcomes, self.embeddings
        return sa.or_(
            e.c.id.is_(None), e.c.model != model, e.c.updated_at < o.c.updated_at, e.c.image_url != o.c.image_url
        )

    def unpublished_embeddings(self, window: Window, model: str, page_size: int) -> Iterator[list[sa.Row]]:
        """Pages of the embeddings `publish_embeddings` would write, parsed: (product_image_id, embedding)."""
        self.ensure_tables()
        o = self.outcomes
        joined, where = self._unpublished(window, model)
        query = sa.select(o.c.product_image_id, o.c.embedding).select_from(joined).where(*where)
        yield from self._pages(query, o.c.product_image_id, page_size)

    def publish_embeddings(self, window: Window, model: str, page_size: int) -> Iterator[int]:
        """Upsert the window's new embeddings into product_embeddings, one page per transaction, yielding the rows
        written. The JSON is copied inside the database (INSERT ... SELECT), never parsed; re-running never
        duplicates (product_image_id is unique)."""
        self.ensure_tables()
        o, e = self.outcomes, self.embeddings
        joined, where = self._unpublished(window, model)
        ids = sa.select(o.c.product_image_id).select_from(joined).where(*where)
        columns = [
            "product_id",
            "product_image_id",
            "embedding",
            "model",
            "dimensions",
            "image_url",
            "created_at",
            "updated_at",
        ]
        for page in self._pages(ids, o.c.product_image_id, page_size):
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
            with self.engine.begin() as conn:
                conn.execute(
                    upsert_statement(conn, e, columns, keys=("product_image_id",), keep=("created_at",), select=rows)
                )
            yield len(page)

    # -- sensors --------------------------------------------------------------------------------------------

    def changed_images(self, after: tuple[dt.datetime, int] | None, limit: int) -> list[sa.Row]:
        """Images created or changed after the cursor (updated_at, id), oldest first: (id, created_at, updated_at)."""
        i = self.images
        query = sa.select(i.c.id, i.c.created_at, i.c.updated_at).where(i.c.updated_at.is_not(None))
        if after is not None:
            stamp, last_id = after
            updated, stamp = self._instant(i.c.updated_at), self._instant(stamp)
            query = query.where(sa.or_(updated > stamp, sa.and_(updated == stamp, i.c.id > last_id)))
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(i.c.updated_at, i.c.id).limit(limit)).all()

    def days_needing_work(
        self, model: str, max_attempts: int, retry_delay_seconds: float, now: dt.datetime
    ) -> set[dt.date]:
        """Days (of created_at) holding images with work to do: never seen, pending, changed since their outcome,
        not yet published, or failed with a retry due (delay x 2^(attempts-1) after the last attempt)."""
        self.ensure_tables()
        i, o, e = self.images, self.outcomes, self.embeddings
        joined = i.outerjoin(o, sa.and_(o.c.product_image_id == i.c.id, o.c.model == model)).outerjoin(
            e, e.c.product_image_id == i.c.id
        )
        needs_work = sa.or_(
            sa.and_(o.c.status.is_(None), sa.or_(e.c.id.is_(None), e.c.model != model)),
            o.c.status == PENDING,
            sa.and_(o.c.status.is_not(None), self._instant(o.c.image_updated_at) != self._instant(i.c.updated_at)),
            sa.and_(o.c.status == INDEXED, self._stale(model)),
        )
        days: set[dt.date] = set()
        with self.engine.connect() as conn:
            found = sa.select(i.c.created_at).select_from(joined).where(needs_work, i.c.created_at.is_not(None))
            for (created_at,) in conn.execute(found):
                days.add(naive_utc(created_at).date())
            retryable = (
                sa.select(i.c.created_at, o.c.attempts, o.c.updated_at)
                .select_from(joined)
                .where(o.c.status == FAILED, o.c.attempts < max_attempts, o.c.image_url.is_not(None))
            )
            for created_at, attempts, updated_at in conn.execute(retryable):
                if updated_at + dt.timedelta(seconds=retry_delay_seconds * 2 ** max(attempts - 1, 0)) <= now:
                    days.add(naive_utc(created_at).date())
        return days

    def reset_failures(self, model: str) -> list[dt.date]:
        """Make failed images of `model` that have a URL retryable again (attempts 0); returns their days."""
        self.ensure_tables()
        o, i = self.outcomes, self.images
        retryable = sa.and_(o.c.model == model, o.c.status == FAILED, o.c.image_url.is_not(None))
        with self.engine.begin() as conn:
            days = {
                naive_utc(row[0]).date()
                for row in conn.execute(
                    sa.select(i.c.created_at).select_from(o.join(i, i.c.id == o.c.product_image_id)).where(retryable)
                )
            }
            conn.execute(sa.update(o).where(retryable).values(status=PENDING, attempts=0, updated_at=utcnow()))
        return sorted(days)

    # -- checks and status ----------------------------------------------------------------------------------

    def products_without_embeddings(self, window: Window, model: str) -> dict[int, set[dt.date]]:
        """Products with images in the window but no embedding from `model`, with the days of those images."""
        self.ensure_tables()
        i, e = self.images, self.embeddings
        has_embedding = sa.select(e.c.id).where(e.c.product_id == i.c.product_id, e.c.model == model).exists()
        query = sa.select(i.c.product_id, i.c.created_at).where(*self._in(window, i.c.created_at), ~has_embedding)
        found: dict[int, set[dt.date]] = {}
        with self.engine.connect() as conn:
            for product_id, created_at in conn.execute(query):
                found.setdefault(product_id, set()).add(naive_utc(created_at).date())
        return dict(sorted(found.items()))

    def failure_reasons(self, window: Window, model: str, max_attempts: int) -> list[sa.Row]:
        """Images of the window that failed for good (attempts used up): (product_image_id, error)."""
        o, i = self.outcomes, self.images
        query = (
            sa.select(o.c.product_image_id, o.c.error)
            .select_from(o.join(i, i.c.id == o.c.product_image_id))
            .where(
                o.c.model == model,
                o.c.status == FAILED,
                o.c.attempts >= max_attempts,
                *self._in(window, i.c.created_at),
            )
            .order_by(o.c.product_image_id)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def quarantine(self, product_image_ids: Sequence[int], model: str, reason: str) -> None:
        """Mark outcomes failed so their embedding never reaches product_embeddings."""
        o = self.outcomes
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(o)
                .where(o.c.model == model, o.c.product_image_id.in_(list(product_image_ids)))
                .values(status=FAILED, error=reason, updated_at=utcnow())
            )

    def products_without_images(self) -> int:
        p, i = self.products, self.images
        query = (
            sa.select(sa.func.count()).select_from(p).where(~sa.select(i.c.id).where(i.c.product_id == p.c.id).exists())
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def status(self) -> dict[str, dict[str, int]]:
        """Per model: embeddings stored, distinct products, images indexed / pending / failed."""
        self.ensure_tables()
        o, e = self.outcomes, self.embeddings
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
            for key in ("embeddings", "products", f"images_{INDEXED}", f"images_{PENDING}", f"images_{FAILED}"):
                counts.setdefault(key, 0)
        return report

    def failed_images(self, model: str | None = None, limit: int = 100) -> list[sa.Row]:
        o = self.outcomes
        query = sa.select(
            o.c.product_image_id, o.c.product_id, o.c.model, o.c.attempts, o.c.error, o.c.updated_at
        ).where(o.c.status == FAILED)
        if model:
            query = query.where(o.c.model == model)
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(o.c.product_image_id).limit(limit)).all()


def upsert(
    conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str], keep: Sequence[str] = ()
) -> None:
    """Insert rows, or update every column but `keys` and `keep` where the key exists (all three dialects)."""
    conn.execute(upsert_statement(conn, table, list(rows[0]), keys, keep), list(rows))


def upsert_statement(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    keys: Sequence[str],
    keep: Sequence[str] = (),
    select: sa.Select | None = None,
) -> sa.Insert:
    """INSERT (of values, or of `select`'s rows) that updates the other columns where `keys` already exist."""
    dialect = conn.dialect.name
    module = {"mysql": mysql, "postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        raise CatalogueError(f"the {dialect} database is not supported: use SQLite, PostgreSQL or MySQL/MariaDB")
    stmt = module.insert(table)
    if select is not None:
        stmt = stmt.from_select(list(columns), select)
    changed = [c for c in columns if c not in keys and c not in keep]
    if dialect == "mysql":
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in changed})
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in changed})


class ShopDatabase(dg.ConfigurableResource):
    """The shop's database (DATABASE_URL) and how its relative image paths become URLs (IMAGE_BASE_URL)."""

    url: str
    image_base_url: str | None = None

    def catalogue(self) -> Catalogue:
        return _catalogue(self.url)


@functools.lru_cache(maxsize=16)
def _catalogue(url: str) -> Catalogue:
    return Catalogue.connect(url)
