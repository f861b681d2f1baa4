"""`product_similarities` and `product_duplicates`, the public answers of the similarity domain.

Laravel reads a product's list with one indexed query: `where product_id = ? order by rank`. Lists are replaced
per product in one transaction, so a reader never sees half a list.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction
from replicate_assets.db.schema import Schema
from replicate_assets.similarity.lists import Lists

BATCH = 5000  # rows per INSERT: fast on every dialect, below their parameter limits


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[tuple]) -> None:
    """Insert `rows` (tuples in the table's column order, no None). PostgreSQL (psycopg2) takes them by COPY;
    SQLite and MySQL BATCH at a time straight to the driver's executemany (SQLAlchemy's per-row work was most of
    the time); another PostgreSQL driver through SQLAlchemy."""
    names = [c.name for c in table.columns]
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _copy(conn, f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) FROM STDIN WITH (FORMAT csv)", rows)
        return
    processors = [c.type.bind_processor(conn.dialect) for c in table.columns]
    style = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    values = ", ".join([style or ""] * len(names))
    sql = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) VALUES ({values})"
    for lo in range(0, len(rows), BATCH):
        batch = rows[lo : lo + BATCH]
        if style is None or conn.dialect.name == "postgresql":
            conn.execute(sa.insert(table), [dict(zip(names, row, strict=True)) for row in batch])
            continue
        if any(processors):
            batch = [tuple(f(v) if f else v for f, v in zip(processors, row, strict=True)) for row in batch]
        conn.exec_driver_sql(sql, batch)


def _copy(conn: sa.Connection, statement: str, rows: list[tuple]) -> None:
    """COPY ... FROM STDIN in CSV, inside `conn`'s transaction: numbers as written by Python, text quoted by csv,
    timestamps as ISO text (each distinct value formatted once: a list's model and time repeat on every row)."""
    formatted: dict[object, str] = {}

    def field(value: object) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return repr(value)
        found = formatted.get(value)
        if found is None:
            text = value.isoformat(" ") if isinstance(value, dt.datetime) else str(value)
            found = formatted[value] = '"' + text.replace('"', '""') + '"'
        return found

    buffer = io.StringIO("\n".join(",".join(map(field, row)) for row in rows) + "\n")
    with conn.connection.dbapi_connection.cursor() as cursor:
        cursor.copy_expert(statement, buffer)


class SimilarityStore:
    """Reads and writes of the similarity tables for one shop database."""

    def __init__(self, schema: Schema):
        self.schema, self.engine = schema, schema.engine
        self.table, self.duplicates = schema.similarities, schema.duplicates

    def model(self) -> str | None:
        """The model the stored lists were computed with (None: no lists yet)."""
        self.schema.ensure_tables()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.table.c.model).limit(1)).scalar()

    def lists(self, products: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
        """The stored lists of `products`, best first."""
        t, found = self.table, defaultdict(list)
        wanted = sorted(set(products))
        with self.engine.connect() as conn:
            for lo in range(0, len(wanted), BATCH):
                query = (
                    sa.select(t.c.product_id, t.c.similar_product_id, t.c.score)
                    .where(t.c.product_id.in_(wanted[lo : lo + BATCH]))
                    .order_by(t.c.product_id, t.c.rank)
                )
                for p, q, s in conn.execute(query):
                    found[int(p)].append((int(q), float(s)))
        return dict(found)

    def live(self, products: Iterable[int]) -> set[int]:
        """Which of `products` exist and are not soft-deleted now (one indexed query on products.id)."""
        p, wanted = self.schema.products, sorted(set(products))
        query = sa.select(p.c.id).where(p.c.id.in_(wanted))
        if self.schema.has_deleted_at:
            query = query.where(p.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return {int(row[0]) for row in conn.execute(query)} if wanted else set()

    def kth_scores(self, k: int) -> dict[int, float]:
        """The K-th score of every full list (a product absent here takes any product in)."""
        t = self.table
        with self.engine.connect() as conn:
            return {
                int(p): float(s) for p, s in conn.execute(sa.select(t.c.product_id, t.c.score).where(t.c.rank == k))
            }

    def containing(self, products: Iterable[int]) -> set[int]:
        """Products whose list shows one of `products`."""
        t, wanted, found = self.table, sorted(set(products)), set()
        with self.engine.connect() as conn:
            for lo in range(0, len(wanted), BATCH):
                chunk = wanted[lo : lo + BATCH]
                found |= {
                    int(p) for (p,) in conn.execute(sa.select(t.c.product_id).where(t.c.similar_product_id.in_(chunk)))
                }
        return found

    def replace(self, lists: Lists, model: str, products: Iterable[int] | None, at: dt.datetime) -> int:
        """Store `lists` in place of the lists of `products` (None: of every product), in one transaction."""
        t = self.table
        columns = lists.p.tolist(), lists.rank.tolist(), lists.q.tolist(), lists.s.tolist()
        rows = [(p, r, q, s, model, at) for p, r, q, s in zip(*columns, strict=True)]
        wanted = None if products is None else sorted(set(products))

        def work(conn: sa.Connection) -> None:
            if wanted is None:
                conn.execute(sa.delete(t))
            else:
                for lo in range(0, len(wanted), BATCH):
                    conn.execute(sa.delete(t).where(t.c.product_id.in_(wanted[lo : lo + BATCH])))
            insert_rows(conn, t, rows)

        in_transaction(self.engine, work)
        return len(rows)

    def replace_duplicates(self, pairs: dict[tuple[int, int], str], model: str, at: dt.datetime) -> int:
        """Store every duplicate pair (the whole table: the pairs are cheap to compute from digests)."""
        d = self.duplicates
        rows = [(p, q, why, model, at) for (p, q), why in sorted(pairs.items())]

        def work(conn: sa.Connection) -> None:
            conn.execute(sa.delete(d))
            insert_rows(conn, d, rows)

        in_transaction(self.engine, work)
        return len(rows)
