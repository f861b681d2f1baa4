"""Similar products above the size where the lists are computed exactly, on CLIP-like vectors (a shared direction,
categories, variants, near-copies), against a brute force that shares no code with the lists
(`replicate_assets.testing.exact`). The first test is the lists' math alone; the second runs the update on SQLite."""

import datetime as dt

import numpy as np
import sqlalchemy as sa

from replicate_assets.db import connect, engine_for
from replicate_assets.db.similarities import SimilarityStore
from replicate_assets.db.vectors import VectorStore
from replicate_assets.similarity.lists import similar_products
from replicate_assets.similarity.neighbours import EXACT_LIMIT, Images
from replicate_assets.similarity.update import rebuild_limit, update_similarities
from replicate_assets.similarity.vectors import digest
from replicate_assets.testing.exact import brute_force, clip_like, recall, wrong_lists
from replicate_assets.testing.sample_shop import create_shop_tables

MODEL = "openai/clip"


def test_the_approximate_lists_above_the_exact_size_match_an_independent_reference():
    products, vectors = clip_like(16_000)  # 32,000 images: the inverted-file path
    assert len(vectors) > EXACT_LIMIT
    urls = np.array([None] * len(vectors), dtype=object)
    urls[5] = urls[9] = "https://shop.example/shared.png"  # products 3 and 5 show one image: duplicates, not similar
    images = Images(
        np.arange(1, len(vectors) + 1, dtype=np.int64),
        products,
        vectors,
        np.array([digest(v) for v in vectors], dtype=object),
        urls,
    )
    lists = {p: [q for q, _ in listed] for p, listed in similar_products(images, 20).by_product().items()}
    rng = np.random.default_rng(11)
    sample = sorted({3, 5, *rng.choice(np.unique(products), 300, replace=False).tolist()})
    truth, _ = brute_force(images, sample, 20)
    assert recall(lists, truth) >= 0.98
    assert 5 not in lists[3] and 3 not in lists[5]
    assert all(len(lists[p]) == 20 and p not in lists[p] for p in sample)


def test_an_increment_that_would_touch_most_lists_rebuilds_them_all_and_stays_exact(tmp_path):
    """1,600 products (3,200 CLIP-like images) published straight into product_embeddings: one new product is an
    increment, and so are three products losing an image; soft-deleting a quarter of the catalogue (1,200 stay:
    above the size where the rule applies) touches most lists, so the update falls back to a full rebuild. Every
    time the lists equal the brute force."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = engine_for(url)
    create_shop_tables(engine)
    products, vectors = clip_like(1_601, seed=5)
    now = dt.datetime(2025, 1, 15, 12)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (:id, :name, :at, :at)"),
            [{"id": p, "name": f"p{p}", "at": now} for p in range(1, 1_602)],
        )
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (:id, :product, :path, :at, :at)"
            ),
            [{"id": i + 1, "product": int(p), "path": f"{i + 1}.png", "at": now} for i, p in enumerate(products)],
        )
    schema = connect(url)
    schema.ensure_tables()

    def publish(first: int, last: int) -> None:  # images first..last (1-based), as embedding_table writes them
        with engine.begin() as conn:
            conn.execute(
                schema.embeddings.insert(),
                [
                    {
                        "product_image_id": i + 1,
                        "product_id": int(products[i]),
                        "model": MODEL,
                        "dimensions": 768,
                        "image_url": f"http://images.example/{i + 1}.png",
                        "created_at": now,
                        "updated_at": now,
                        "embedding": vectors[i].tolist(),
                    }
                    for i in range(first - 1, last)
                ],
            )

    def exact_now() -> None:
        live = VectorStore(schema).catalogue(MODEL).images
        stored = SimilarityStore(schema).lists(np.unique(live.products).tolist())
        assert wrong_lists(stored, live, np.unique(live.products).tolist(), 20) == []
        assert set(stored) == set(np.unique(live.products).tolist())

    publish(1, 3_200)  # products 1..1,600
    assert update_similarities(schema, MODEL, 20).mode == "full"
    publish(3_201, 3_202)  # one new product
    small = update_similarities(schema, MODEL, 20)
    assert (small.mode, small.reason) == ("incremental", "new or changed images")
    assert small.lists_written < 200
    exact_now()
    with engine.begin() as conn:  # one image of each of three products deleted outright: the products stay
        conn.execute(sa.text("DELETE FROM product_embeddings WHERE product_image_id IN (21, 401, 2001)"))
        conn.execute(sa.text("DELETE FROM product_images WHERE id IN (21, 401, 2001)"))
    fewer = update_similarities(schema, MODEL, 20)
    assert fewer.mode == "incremental" and fewer.lists_recomputed < 200
    exact_now()  # their own lists too: computed again from the image each has left
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE products SET deleted_at = :at WHERE id % 4 = 0"), {"at": now})
    large = update_similarities(schema, MODEL, 20)
    assert large.mode == "full" and "lists to compute again, more than a rebuild costs" in large.reason
    assert large.lists_recomputed == large.products  # the rebuild computed every list
    assert rebuild_limit(large.images, large.products) < 1_200  # the soft-deleted quarter was in most lists
    exact_now()
