"""`search_query_embeddings`: embeddings of search queries, so a repeated query costs no prediction."""

from __future__ import annotations

import hashlib

import numpy as np
import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction, insert_missing_statement
from replicate_assets.db.instants import utcnow
from replicate_assets.db.schema import Schema
from replicate_assets.similarity.vectors import from_bytes, to_bytes
from replicate_assets.urls import shown


def query_key(kind: str, query: str) -> str:
    return hashlib.sha256(f"{kind}:{query}".encode()).hexdigest()


class QueryCache:
    """Reads and writes of the query cache for one shop database."""

    def __init__(self, schema: Schema, dimensions: int = 768):
        self.schema, self.engine, self.table, self.dimensions = schema, schema.engine, schema.query_cache, dimensions

    def get(self, model: str, kind: str, query: str) -> np.ndarray | None:
        """The cached unit vector of a query, counting the hit; None when it was never embedded."""
        t, key = self.table, query_key(kind, query)
        where = (t.c.model == model, t.c.kind == kind, t.c.query_hash == key)
        with self.engine.connect() as conn:
            blob = conn.execute(sa.select(t.c.vector).where(*where)).scalar()
        if blob is None:
            return None
        in_transaction(self.engine, lambda conn: conn.execute(sa.update(t).where(*where).values(hits=t.c.hits + 1)))
        return from_bytes([blob], self.dimensions)[0]

    def put(self, model: str, kind: str, query: str, vector: np.ndarray) -> None:
        """Keep a query's unit vector (an image URL is kept without credentials or query string, by its hash)."""
        row = {
            "model": model,
            "kind": kind,
            "query_hash": query_key(kind, query),
            "shown": query if kind == "text" else shown(query),
            "hits": 0,
            "created_at": utcnow(),
            "vector": to_bytes(vector),
        }
        keys = ("model", "kind", "query_hash")
        in_transaction(self.engine, lambda conn: conn.execute(insert_missing_statement(conn, self.table, keys), [row]))
