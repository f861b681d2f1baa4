"""The shop's tables, reflected and checked, and ours, at the revision this release needs (`migrations`).

- `products`, `product_images`: the shop's. We read them; a missing table or column is one clear error.
- `product_embeddings`: ours, and the public contract: the shop (and the similarity assets) read it.
- `clip_embedding_outcomes`: ours and private to the pipeline: each image's outcome per model, and its claim.
- `product_similarities`, `product_duplicates` (public), `clip_image_vectors`, `search_query_embeddings`
  (private): the similarity domain's (tables.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any, NamedTuple

import sqlalchemy as sa

from replicate_assets.db import migrations
from replicate_assets.db.engine import CatalogueError, engine_for, masked, prepare
from replicate_assets.db.tables import OurTables

PENDING, INDEXED, FAILED = "pending", "indexed", "failed"


@dataclasses.dataclass(frozen=True)
class ShopColumns:
    """Where `product_images` keeps what we read (Laravel's names by default; SHOP_IMAGE_*_COLUMN)."""

    path: str = "path"
    created_at: str = "created_at"
    updated_at: str = "updated_at"


@dataclasses.dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end) of `product_images.created_at`; None bounds are open."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None


class ImageColumns(NamedTuple):
    id: sa.Column
    product_id: sa.Column
    path: sa.Column
    created_at: sa.Column
    updated_at: sa.Column


class Schema:
    """One shop database: its engine, its tables and ours. Build it with `connect(url)`."""

    def __init__(self, engine: sa.Engine, columns: ShopColumns = ShopColumns()):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.metadata = sa.MetaData()
        where = masked(engine.url.render_as_string(hide_password=False))
        try:
            self.products = sa.Table("products", self.metadata, autoload_with=engine)
            self.images = sa.Table("product_images", self.metadata, autoload_with=engine)
        except sa.exc.NoSuchTableError as err:
            raise CatalogueError(
                f"the shop database {where} has no table {err}: "
                "point DATABASE_URL at the shop's database (the one with products and product_images)"
            ) from None
        except sa.exc.OperationalError as err:
            reason = str(err.orig).splitlines()[0] if err.orig else type(err).__name__
            raise CatalogueError(
                f"cannot connect to the shop database {where}: {reason}. Check DATABASE_URL and that the server "
                "is running"
            ) from None
        self.image = self._image_columns(columns)
        self.has_deleted_at = "deleted_at" in self.products.c
        self.table_options = self._table_options()
        # Our foreign keys copy the referenced column types: Laravel's ids are BIGINT UNSIGNED on MySQL.
        ours = OurTables(self.metadata, self.products.c.id.type, self.image.id, self.table_options)
        self.outcomes, self.embeddings = ours.outcomes, ours.embeddings
        self.vectors, self.similarities, self.duplicates = ours.vectors, ours.similarities, ours.duplicates
        self.query_cache = ours.query_cache
        self.ours = ours.all
        self._ready = False

    def _image_columns(self, columns: ShopColumns) -> ImageColumns:
        """The columns we read, checked: a missing one, or one of the wrong type, is one clear error."""
        if "id" not in self.products.c:
            raise CatalogueError("the shop table products has no column id: it needs Laravel's id primary key")
        wanted = {
            "id": ("id", None),
            "product_id": ("product_id", None),
            "path": (columns.path, "SHOP_IMAGE_PATH_COLUMN"),
            "created_at": (columns.created_at, "SHOP_IMAGE_CREATED_AT_COLUMN"),
            "updated_at": (columns.updated_at, "SHOP_IMAGE_UPDATED_AT_COLUMN"),
        }
        found = {}
        for role, (name, setting) in wanted.items():
            if name not in self.images.c:
                fix = f"; if it has another name, set {setting} to it" if setting else ""
                raise CatalogueError(
                    f"the shop table product_images has no column {name} (have: {', '.join(self.images.c.keys())}){fix}"
                )
            column = self.images.c[name]
            problem = _type_problem(role, column.type, self.dialect)
            if problem:
                raise CatalogueError(f"product_images.{name} is {column.type} but {problem}")
            found[role] = column
        return ImageColumns(**found)

    def _table_options(self) -> dict[str, Any]:
        """MySQL/MariaDB: InnoDB, and the shop table's utf8mb4 collation (never the server's latin1 default)."""
        if self.dialect != "mysql":
            return {}
        with self.engine.connect() as conn:
            collation = conn.execute(
                sa.text(
                    "SELECT TABLE_COLLATION FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'product_images'"
                )
            ).scalar()
        if not collation or not str(collation).startswith("utf8mb4"):
            collation = "utf8mb4_unicode_ci"
        return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": str(collation)}

    # -- our tables -----------------------------------------------------------------------------------------------

    def missing_tables(self) -> list[str]:
        existing = set(sa.inspect(self.engine).get_table_names())
        return [t.name for t in self.ours if t.name not in existing]

    def check_version(self) -> None:
        """Our tables are at this release's revision, or not made yet; else one line says what to run."""
        migrations.require(self, create=False)

    def migrate(self) -> list[str]:
        """Bring our tables to this release's revision; returns the tables it created."""
        before, after = migrations.move(self, migrations.head())
        self._ready = True
        return [table for table in after.ours if table not in before.ours]

    def ensure_tables(self) -> None:
        """Before the pipeline writes: a fresh database gets our tables (commands that only read never call this)."""
        if not self._ready:
            migrations.require(self, create=True)
            self._ready = True

    # -- instants and windows ---------------------------------------------------------------------------------------

    def instant(self, value: sa.ColumnElement | dt.datetime) -> sa.ColumnElement:
        """A timestamp to compare as an instant. SQLite keeps text in whatever format its writer chose
        (Laravel: '2025-01-15 10:30:45', SQLAlchemy: '2025-01-15 10:30:45.000000'): compare julianday()."""
        sqlite = self.dialect == "sqlite"
        if isinstance(value, dt.datetime):
            value = sa.literal(value.isoformat(sep=" ") if sqlite else value, sa.String if sqlite else sa.DateTime)
        return sa.func.julianday(value) if sqlite else value

    def in_window(self, window: Window, column: sa.ColumnElement | None = None) -> list[sa.ColumnElement]:
        column = self.image.created_at if column is None else column
        clauses = []
        if window.start is not None:
            clauses.append(self.instant(column) >= self.instant(window.start))
        if window.end is not None:
            clauses.append(self.instant(column) < self.instant(window.end))
        return clauses

    def raw(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """A shop timestamp as stored: on SQLite as text, parsed by `as_instant`, never by SQLAlchemy."""
        return sa.type_coerce(column, sa.String) if self.dialect == "sqlite" else column


def _type_problem(role: str, kind: sa.types.TypeEngine, dialect: str) -> str | None:
    python = _python_type(kind)
    if role in ("created_at", "updated_at"):
        if python in (dt.datetime, dt.date) or (dialect == "sqlite" and python in (str, None)):
            return None
        return "a timestamp column (datetime, timestamp, or text on SQLite) is needed"
    if role == "path":
        return None if python in (str, None) else "the image path must be a text column"
    return None if python in (int, None) else "an integer id is needed"


def _python_type(kind: sa.types.TypeEngine) -> type | None:
    try:
        return kind.python_type
    except NotImplementedError:
        return None


def connect(url: str, columns: ShopColumns = ShopColumns(), *, create: bool = True, versioned: bool = True) -> Schema:
    """The shop database at `url`; raises CatalogueError naming what is missing, or what to run when our tables
    are at another revision than this release's (versioned=False: `migrate`, which is what fixes that).

    create=False (read-only commands) refuses a SQLite file that does not exist instead of making one.
    """
    prepare(url, create)
    schema = _connect(url, columns)
    if versioned:
        schema.check_version()
    return schema


@functools.lru_cache(maxsize=16)
def _connect(url: str, columns: ShopColumns) -> Schema:
    return Schema(engine_for(url), columns)
