"""`product_image_vectors`: the live image vectors inside the shop's PostgreSQL, for shops that search in SQL.

Where the server has pgvector (installed in the database, or available and ours to create), each live image's unit
vector is kept in a `vector(768)` column with an HNSW index for cosine distance, beside `product_similarities`:

    SELECT product_id, 1 - (embedding <=> :query) AS score
    FROM product_image_vectors ORDER BY embedding <=> :query LIMIT 20;

It follows `clip_image_vectors` (which stays our own search's source): rows of removed images and soft-deleted
products are deleted, new and changed vectors upserted. Elsewhere (SQLite, MySQL/MariaDB, PostgreSQL without
pgvector) nothing is created and `unavailable()` says why.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from replicate_assets.db.instants import utcnow
from replicate_assets.db.schema import Schema
from replicate_assets.similarity.neighbours import Images

TABLE = "product_image_vectors"
PAGE = 1000


class PgVectorTable:
    """`product_image_vectors` in one shop database (PostgreSQL with pgvector only)."""

    def __init__(self, schema: Schema):
        self.schema, self.engine = schema, schema.engine

    def unavailable(self) -> str | None:
        """Why this database cannot hold the vector index; None when it can (the extension is then created)."""
        if self.schema.dialect != "postgresql":
            return f"{self.schema.dialect} has no vector index here (pgvector is PostgreSQL's)"
        with self.engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first():
                return None
            if not conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first():
                return "the pgvector extension is not installed on this PostgreSQL server"
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError as err:
            reason = str(err.orig).splitlines()[0] if err.orig else type(err).__name__
            return f"CREATE EXTENSION vector was refused ({reason}): a database owner can run it once"
        return None

    def sync(self, images: Images, changed: np.ndarray | None, model: str) -> int:
        """Make the table hold exactly `images` (the live vectors of `model`): delete the others, write those
        `changed` marks (every one when None). Returns the rows written."""
        dimensions = images.vectors.shape[1] if images.vectors.ndim == 2 else 768
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (product_image_id bigint PRIMARY KEY, "
                    f"product_id bigint NOT NULL, model varchar(255) NOT NULL, embedding vector({dimensions}) "
                    "NOT NULL, updated_at timestamptz NOT NULL)"
                )
            )
            conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {TABLE}_product_id ON {TABLE} (product_id)"))
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS {TABLE}_embedding ON {TABLE} USING hnsw (embedding vector_cosine_ops)"
                )
            )
            stored = set(conn.execute(sa.text(f"SELECT product_image_id FROM {TABLE}")).scalars())
            other_model = conn.execute(sa.text(f"SELECT 1 FROM {TABLE} WHERE model <> :m LIMIT 1"), {"m": model})
            if other_model.first():
                conn.execute(sa.text(f"DELETE FROM {TABLE}"))
                stored, changed = set(), None
        live = images.ids.tolist()
        gone = sorted(stored - set(live))
        write = [i for i, image_id in enumerate(live) if image_id not in stored or changed is None or changed[i]]
        now = utcnow().replace(tzinfo=dt.UTC)
        with self.engine.begin() as conn:
            for lo in range(0, len(gone), PAGE):
                conn.execute(
                    sa.text(f"DELETE FROM {TABLE} WHERE product_image_id = ANY(:ids)"), {"ids": gone[lo : lo + PAGE]}
                )
            upsert = sa.text(
                f"INSERT INTO {TABLE} (product_image_id, product_id, model, embedding, updated_at) "
                "VALUES (:id, :product, :model, CAST(:vector AS vector), :at) ON CONFLICT (product_image_id) DO "
                "UPDATE SET product_id = excluded.product_id, model = excluded.model, embedding = excluded.embedding, "
                "updated_at = excluded.updated_at"
            )
            for lo in range(0, len(write), PAGE):
                rows = [
                    {
                        "id": int(images.ids[i]),
                        "product": int(images.products[i]),
                        "model": model,
                        "vector": "[" + ",".join(map(str, images.vectors[i].tolist())) + "]",
                        "at": now,
                    }
                    for i in write[lo : lo + PAGE]
                ]
                conn.execute(upsert, rows)
        return len(write)
