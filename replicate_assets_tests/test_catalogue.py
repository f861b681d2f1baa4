"""The shop database on SQLite, PostgreSQL and MariaDB: our tables, their keys, and what the shop can read."""

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from conftest import DAYS

from replicate_assets.db import CatalogueError, OutcomeStore, Reports, Window, connect, engine_for
from replicate_assets.urls import url_hash


def test_migrate_is_idempotent_and_makes_the_laravel_shape(shop_url, shop):
    schema = connect(shop_url)
    assert sorted(schema.migrate()) == [
        "clip_embedding_outcomes",
        "clip_image_vectors",
        "product_duplicates",
        "product_embeddings",
        "product_similarities",
        "search_query_embeddings",
    ]
    assert connect(shop_url).migrate() == []
    inspector = sa.inspect(engine_for(shop_url))
    columns = {c["name"] for c in inspector.get_columns("product_embeddings")}
    assert {
        "id",
        "product_id",
        "product_image_id",
        "embedding",
        "model",
        "dimensions",
        "image_url",
        "created_at",
        "updated_at",
    } <= columns
    unique = inspector.get_unique_constraints("product_embeddings") + [
        i for i in inspector.get_indexes("product_embeddings") if i.get("unique")
    ]
    assert any(u["column_names"] == ["product_image_id"] for u in unique)
    assert any(i["column_names"] == ["product_id"] for i in inspector.get_indexes("product_embeddings"))
    foreign = {fk["referred_table"]: fk for fk in inspector.get_foreign_keys("product_embeddings")}
    assert foreign["products"]["options"].get("ondelete", "CASCADE").upper() == "CASCADE"
    assert set(foreign) == {"products", "product_images"}


def test_embeddings_are_plain_json_and_cascade_with_the_product(shop_url, shop):
    schema = connect(shop_url)
    schema.migrate()
    now = dt.datetime(2025, 1, 15, 12, 0, 0)
    vector = [0.5, -0.25] * 384
    with engine_for(shop_url).begin() as conn:
        conn.execute(
            schema.embeddings.insert(),
            [
                {
                    "product_id": 1,
                    "product_image_id": 1,
                    "embedding": vector,
                    "model": "openai/clip",
                    "dimensions": 768,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        raw = conn.execute(sa.text("SELECT embedding FROM product_embeddings")).scalar_one()
    # What Laravel's JSON cast reads: a JSON array of floats.
    assert (raw if isinstance(raw, list) else json.loads(raw)) == vector
    with engine_for(shop_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM product_images WHERE product_id = 1"))
        conn.execute(sa.text("DELETE FROM products WHERE id = 1"))
        assert conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one() == 0


def test_a_database_without_the_shop_tables_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(CatalogueError, match="has no table products.*point DATABASE_URL"):
        connect(url)


def test_window_summary_counts(shop_url, shop):
    reports = Reports(connect(shop_url))
    whole = reports.window_summary(Window(), "openai/clip")
    assert whole["images"] == shop.images
    day = reports.window_summary(
        Window(dt.datetime.fromisoformat(DAYS[0]), dt.datetime.fromisoformat(DAYS[1])), "openai/clip"
    )
    assert 0 < day["images"] < shop.images


def test_laravel_timestamps_at_midnight_fall_in_their_own_day(shop_url, shop):
    with engine_for(shop_url).begin() as conn:  # written the way Laravel writes them: no fractional seconds
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) VALUES "
                "(5000, 1, 'x.png', '2025-02-02 00:00:00', '2025-02-02 00:00:00')"
            )
        )
    reports = Reports(connect(shop_url))
    day = reports.window_summary(Window(dt.datetime(2025, 2, 2), dt.datetime(2025, 2, 3)), "openai/clip")
    before = reports.window_summary(Window(dt.datetime(2025, 2, 1), dt.datetime(2025, 2, 2)), "openai/clip")
    assert (day["images"], before["images"]) == (1, 0)


def test_known_embeddings_are_the_newest_indexed_outcome_of_each_url(shop_url, shop):
    schema = connect(shop_url)
    schema.migrate()
    engine = engine_for(shop_url)
    with engine.connect() as conn:
        images = conn.execute(sa.text("SELECT id, product_id FROM product_images ORDER BY id LIMIT 5")).all()
    old, new = dt.datetime(2025, 1, 15, 12), dt.datetime(2025, 1, 16, 12)
    outcomes = [  # (image, model, url, status, updated_at, embedding)
        (images[0], "openai/clip", "https://img/a.png", "indexed", old, [0.0, 1.0]),
        (images[1], "openai/clip", "https://img/a.png", "indexed", new, [1.0, 0.0]),
        (images[2], "openai/clip", "https://img/b.png", "pending", new, None),
        (images[3], "openai/clip", "https://img/c.png", "failed", new, None),
        (images[4], "krthr/clip-embeddings", "https://img/d.png", "indexed", new, [0.5, 0.5]),
    ]
    with engine.begin() as conn:
        conn.execute(
            schema.outcomes.insert(),
            [
                {
                    "product_image_id": image.id,
                    "product_id": image.product_id,
                    "model": model,
                    "image_url": url,
                    "url_hash": url_hash(url),
                    "status": status,
                    "embedding": embedding,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                for image, model, url, status, stamp, embedding in outcomes
            ],
        )
    statements = []

    def capture(_conn, _cursor, sql, params, *_):
        statements.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        known = OutcomeStore(schema).known_embeddings("openai/clip", {f"https://img/{name}.png" for name in "abcde"})
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert {url: row.embedding for url, row in known.items()} == {"https://img/a.png": [1.0, 0.0]}
    if engine.dialect.name == "sqlite":
        # Looked up through the URL index: a walk over every indexed outcome made each page cost the catalogue's size.
        sql, params = next((sql, params) for sql, params in statements if "url_hash IN" in sql)
        with engine.connect() as conn:
            plan = " ".join(str(step) for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "ix_clip_embedding_outcomes_model_url" in plan, plan
