"""The shop database through SQLAlchemy Core, on SQLite, PostgreSQL and MySQL/MariaDB: no Dagster here.

- `schema`: the shop's tables (checked) and ours (created, migrated); `connect(url)` gives a `Schema`;
- `embeddings`: `product_embeddings`, the public contract the shop and downstream assets read;
- `outcomes`: `clip_embedding_outcomes`, private to the pipeline (outcomes, attempts, claims);
- `reports`: read-only counts and lists; `engine`, `instants`: connections and timestamps.
"""

from replicate_assets.db.embeddings import EmbeddingStore
from replicate_assets.db.engine import CatalogueError, engine_for, masked
from replicate_assets.db.instants import as_instant, utcnow
from replicate_assets.db.outcomes import OutcomeStore
from replicate_assets.db.reports import Reports
from replicate_assets.db.schema import (
    EMBEDDINGS,
    FAILED,
    INDEXED,
    OUTCOMES,
    PENDING,
    Schema,
    ShopColumns,
    Window,
    connect,
)

__all__ = [
    "EMBEDDINGS",
    "FAILED",
    "INDEXED",
    "OUTCOMES",
    "PENDING",
    "CatalogueError",
    "EmbeddingStore",
    "OutcomeStore",
    "Reports",
    "Schema",
    "ShopColumns",
    "Window",
    "as_instant",
    "connect",
    "engine_for",
    "masked",
    "utcnow",
]
