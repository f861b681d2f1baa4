"""The shop database through SQLAlchemy Core, on SQLite, PostgreSQL and MySQL/MariaDB: no Dagster here.

- `schema`: the shop's tables (checked) and ours (created, migrated); `connect(url)` gives a `Schema`;
- `embeddings`: `product_embeddings`, the public contract the shop and downstream assets read;
- `outcomes`, `claims`: `clip_embedding_outcomes`, private to the pipeline (outcomes and attempts; claims);
- `reports`, `changes`: read-only counts and lists (changes: what the sensors ask);
- `engine`, `instants`: connections, transactions, paging, upserts; timestamps as instants.
"""

from replicate_assets.db.changes import Changes
from replicate_assets.db.claims import Claims
from replicate_assets.db.embeddings import EmbeddingStore
from replicate_assets.db.engine import CatalogueError, engine_for, masked
from replicate_assets.db.instants import as_instant, utcnow
from replicate_assets.db.outcomes import OutcomeStore
from replicate_assets.db.reports import Reports
from replicate_assets.db.schema import FAILED, INDEXED, PENDING, Schema, ShopColumns, Window, connect
from replicate_assets.db.tables import EMBEDDINGS, OUTCOMES

__all__ = [
    "EMBEDDINGS",
    "FAILED",
    "INDEXED",
    "OUTCOMES",
    "PENDING",
    "CatalogueError",
    "Changes",
    "Claims",
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
