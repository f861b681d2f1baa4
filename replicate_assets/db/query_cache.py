"""`search_query_embeddings`: embeddings of search queries, so a repeated query costs no prediction.

A row with an empty vector is a claim: one process is paying for that query's embedding now. Another process
asking the same query waits for the vector instead of paying again; a claim older than `CLAIM_SECONDS` (its
process died) may be taken over.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import sqlalchemy as sa

from replicate_assets.db.engine import in_transaction
from replicate_assets.db.instants import utcnow
from replicate_assets.db.schema import Schema
from replicate_assets.similarity.vectors import from_bytes, to_bytes
from replicate_assets.urls import shown

CLAIM_SECONDS = 60.0  # longer than a query's prediction takes; a claim this old belongs to a process that died


def query_key(kind: str, query: str) -> str:
    return hashlib.sha256(f"{kind}:{query}".encode()).hexdigest()


class QueryCache:
    """Reads and writes of the query cache for one shop database."""

    def __init__(self, schema: Schema, dimensions: int = 768):
        self.schema, self.engine, self.table, self.dimensions = schema, schema.engine, schema.query_cache, dimensions

    def _where(self, model: str, kind: str, query: str) -> tuple:
        t = self.table
        return t.c.model == model, t.c.kind == kind, t.c.query_hash == query_key(kind, query)

    def get(self, model: str, kind: str, query: str) -> np.ndarray | None:
        """The cached unit vector of a query, counting the hit; None when it was never embedded (or is being)."""
        t, where = self.table, self._where(model, kind, query)
        with self.engine.connect() as conn:
            blob = conn.execute(sa.select(t.c.vector).where(*where)).scalar()
        if not blob:
            return None
        in_transaction(self.engine, lambda conn: conn.execute(sa.update(t).where(*where).values(hits=t.c.hits + 1)))
        return from_bytes([blob], self.dimensions)[0]

    def claim(self, model: str, kind: str, query: str) -> bool:
        """Take the right to pay for a query's embedding: True when this caller holds it (a new claim, or one
        whose holder died), False when another process holds it or the vector is there."""
        t, where, now = self.table, self._where(model, kind, query), utcnow()
        row = {
            "model": model,
            "kind": kind,
            "query_hash": query_key(kind, query),
            "shown": _shown(kind, query),
            "hits": 0,
            "created_at": now,
            "vector": b"",
        }
        try:
            in_transaction(self.engine, lambda conn: conn.execute(sa.insert(t), [row]))
            return True
        except sa.exc.IntegrityError:
            pass
        stale = now - dt.timedelta(seconds=CLAIM_SECONDS)
        taken = sa.update(t).where(*where, sa.func.length(t.c.vector) == 0, t.c.created_at < stale)
        return in_transaction(self.engine, lambda conn: conn.execute(taken.values(created_at=now)).rowcount) == 1

    def release(self, model: str, kind: str, query: str) -> None:
        """Give up a claim without a vector (the prediction failed): the next asker may pay."""
        t, where = self.table, self._where(model, kind, query)
        in_transaction(
            self.engine, lambda conn: conn.execute(sa.delete(t).where(*where, sa.func.length(t.c.vector) == 0))
        )

    def put(self, model: str, kind: str, query: str, vector: np.ndarray) -> None:
        """Keep a query's unit vector in the row its claim made (an image URL is kept without credentials or query
        string, by its hash)."""
        t, where = self.table, self._where(model, kind, query)
        values = {"shown": _shown(kind, query), "created_at": utcnow(), "vector": to_bytes(vector)}
        in_transaction(self.engine, lambda conn: conn.execute(sa.update(t).where(*where).values(**values)))


def _shown(kind: str, query: str) -> str:
    return query if kind == "text" else shown(query)
