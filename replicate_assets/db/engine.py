"""Engines for the shop database on SQLite, PostgreSQL and MySQL/MariaDB, with sessions pinned to UTC.

Every session compares and returns timestamps in UTC, whatever the server's own time zone: PostgreSQL's
`timestamptz` and MySQL's `timestamp` are converted by the session's zone, so an unpinned session moves partition
windows and makes stored instants differ from the shop's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

T = TypeVar("T")
DRIVERS = (
    ("postgresql://", "postgresql+psycopg2://"),
    ("postgres://", "postgresql+psycopg2://"),
    ("mysql://", "mysql+pymysql://"),
    ("mariadb://", "mysql+pymysql://"),
)
# Deadlocks and lock timeouts that a retry of the whole transaction resolves (MySQL 1213/1205, PostgreSQL
# 40P01/40001, SQLite "database is locked").
RETRYABLE = ("1213", "1205", "deadlock", "could not serialize", "database is locked")


class CatalogueError(RuntimeError):
    """The shop database is unreachable or lacks what we need; the message says what to do."""


def normalise_url(url: str) -> str:
    """Give SQLAlchemy an explicit driver: SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3."""
    for bare, explicit in DRIVERS:
        if url.startswith(bare):
            return explicit + url[len(bare) :]
    return url


def masked(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    try:
        return sa.make_url(normalise_url(url)).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "(not a database URL)"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = sa.make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def prepare(url: str, create: bool) -> None:
    """Before the first connection: make a SQLite file's folder (create=True), or insist that it exists."""
    path = sqlite_file(url)
    if path is None:
        return
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise CatalogueError(
            f"the shop database {path} does not exist: check DATABASE_URL (sqlite:///relative/path.db, or "
            "sqlite:////absolute/path.db)"
        )


@functools.lru_cache(maxsize=16)
def engine_for(url: str) -> sa.Engine:
    """The engine for `url` (cached); SQLite files get WAL and a 30 s busy timeout, server sessions UTC."""
    url = normalise_url(url)
    backend = sa.make_url(url).get_backend_name()
    # hide_parameters: an error never echoes a row's values (a signed image URL, an embedding) into a log.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"options": "-c timezone=UTC"}
    elif backend == "mysql":
        kwargs["connect_args"] = {"init_command": "SET time_zone = '+00:00'"}
    engine = sa.create_engine(url, **kwargs)
    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")  # for ON DELETE CASCADE
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (status, checks) beside a running write
            cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: safe from a killed process, one fsync less
            cursor.execute("PRAGMA cache_size=-16384")  # 16 MB a connection: embeddings are 7-8 kB each
            cursor.close()

    return engine


def in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T], attempts: int = 6) -> T:
    """Run `work` in one transaction, again from the start when the database reports a deadlock."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return work(conn)
        except sa.exc.OperationalError as err:
            if attempt == attempts - 1 or not any(mark in str(err.orig).lower() for mark in RETRYABLE):
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def upsert_statement(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    keys: Sequence[str],
    keep: Sequence[str] = (),
    select: sa.Select | None = None,
) -> sa.Insert:
    """INSERT (of values, or of `select`'s rows) that updates the other columns where `keys` already exist."""
    stmt = _insert(conn, table)
    if select is not None:
        stmt = stmt.from_select(list(columns), select)
    changed = [c for c in columns if c not in keys and c not in keep]
    if conn.dialect.name == "mysql":
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in changed})
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in changed})


def insert_missing_statement(conn: sa.Connection, table: sa.Table, keys: Sequence[str]) -> sa.Insert:
    """INSERT that leaves rows whose `keys` already exist as they are."""
    stmt = _insert(conn, table)
    if conn.dialect.name == "mysql":
        return stmt.on_duplicate_key_update({keys[0]: table.c[keys[0]]})
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    module = {"mysql": mysql, "postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if module is None:
        raise CatalogueError(
            f"the {conn.dialect.name} database is not supported: use SQLite, PostgreSQL or MySQL/MariaDB"
        )
    return module.insert(table)


def pages(engine: sa.Engine, query: sa.Select, key: sa.ColumnElement, page_size: int) -> Iterator[list[sa.Row]]:
    """Keyset pagination: memory stays bounded by the page, whatever the window holds. `key` is the query's first
    column (each page starts after the last page's first column)."""
    last = None
    while True:
        page_query = query.order_by(key).limit(page_size)
        if last is not None:
            page_query = page_query.where(key > last)
        with engine.connect() as conn:
            rows = conn.execute(page_query).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]
