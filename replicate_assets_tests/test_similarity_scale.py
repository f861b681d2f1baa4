"""Similar products above the size where the lists are computed exactly, on CLIP-like vectors (a shared direction,
categories, variants, near-copies), against a brute force that shares no code with the lists
(`replicate_assets.testing.exact`). The first test is the lists' math alone; the others run the update on SQLite."""

import datetime as dt
import signal
import subprocess
import sys
import time

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


class ClipShop:
    """A SQLite shop of CLIP-like images (two a product) whose embeddings are published straight into
    product_embeddings, as embedding_table writes them."""

    def __init__(self, tmp_path, products: int, seed: int = 5):
        self.url = f"sqlite:///{tmp_path / 'shop.db'}"
        self.engine = engine_for(self.url)
        create_shop_tables(self.engine)
        self.products, self.vectors = clip_like(products, seed=seed)
        self.now = dt.datetime(2025, 1, 15, 12)
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (:id, :name, :at, :at)"),
                [{"id": p, "name": f"p{p}", "at": self.now} for p in range(1, products + 1)],
            )
            conn.execute(
                sa.text(
                    "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                    "VALUES (:id, :product, :path, :at, :at)"
                ),
                [
                    {"id": i + 1, "product": int(p), "path": f"{i + 1}.png", "at": self.now}
                    for i, p in enumerate(self.products)
                ],
            )
        self.schema = connect(self.url)
        self.schema.ensure_tables()

    def publish(self, first: int, last: int, vectors=None) -> None:
        """Images first..last (1-based), with their own vectors or `vectors` (changed images)."""
        vectors = self.vectors[first - 1 : last] if vectors is None else vectors
        with self.engine.begin() as conn:
            conn.execute(
                self.schema.embeddings.delete().where(
                    self.schema.embeddings.c.product_image_id >= first,
                    self.schema.embeddings.c.product_image_id <= last,
                )
            )
            conn.execute(
                self.schema.embeddings.insert(),
                [
                    {
                        "product_image_id": first + n,
                        "product_id": int(self.products[first - 1 + n]),
                        "model": MODEL,
                        "dimensions": 768,
                        "image_url": f"http://images.example/{first + n}.png",
                        "created_at": self.now,
                        "updated_at": self.now,
                        "embedding": vector.tolist(),
                    }
                    for n, vector in enumerate(vectors)
                ],
            )

    def exact_now(self) -> None:
        live = VectorStore(self.schema).catalogue(MODEL).images
        stored = SimilarityStore(self.schema).lists(np.unique(live.products).tolist())
        assert wrong_lists(stored, live, np.unique(live.products).tolist(), 20) == []
        assert set(stored) == set(np.unique(live.products).tolist())


def test_an_increment_that_would_touch_most_lists_rebuilds_them_all_and_stays_exact(tmp_path):
    """1,600 products (3,200 CLIP-like images) published straight into product_embeddings: one new product is an
    increment, and so are three products losing an image; soft-deleting a quarter of the catalogue (1,200 stay:
    above the size where the rule applies) touches most lists, so the update falls back to a full rebuild. Every
    time the lists equal the brute force."""
    shop = ClipShop(tmp_path, 1_601)
    schema, engine, publish, exact_now, now = shop.schema, shop.engine, shop.publish, shop.exact_now, shop.now

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


UPDATE = """
import sys
from replicate_assets.db import connect
from replicate_assets.similarity.update import update_similarities
schema = connect(sys.argv[1])
print("started", flush=True)
update_similarities(schema, "openai/clip", 20, full=sys.argv[2] == "full")
print("done", flush=True)
"""


def test_an_update_killed_at_any_moment_is_repaired_by_the_next_one(tmp_path):
    """An update copies vectors page by page, replaces the lists, then stamps the vectors it took in, each in its own
    transaction. Killed with SIGKILL at several moments (increments and full rebuilds), the next update leaves every
    list exact: nothing half-done is taken for done."""
    shop = ClipShop(tmp_path, 1_300)
    shop.publish(1, 2_000)  # products 1..1,000; the others arrive round by round
    assert update_similarities(shop.schema, MODEL, 20).mode == "full"
    rng = np.random.default_rng(2)
    outcomes = []
    for round, (delay, mode) in enumerate(
        [(0.0, "increment"), (0.15, "increment"), (0.4, "full"), (0.05, "increment"), (0.8, "full"), (0.3, "increment")]
    ):
        new = 2_001 + 60 * round
        shop.publish(new, new + 59)  # 30 new products
        with shop.engine.connect() as conn:
            live = conn.execute(sa.text("SELECT product_image_id FROM product_embeddings")).scalars().all()
        for image in rng.choice(sorted(live), 8, replace=False).tolist():  # images of 8 products taken again
            product = int(shop.products[image - 1])
            _, again = clip_like(1, seed=5, first=product, version=round + 1)
            shop.publish(image, image, again[(image - 1) % 2 : (image - 1) % 2 + 1])
        gone = rng.choice(sorted(live), 5, replace=False).tolist()  # and 5 images deleted outright
        with shop.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM product_embeddings WHERE product_image_id IN {tuple(gone)}"))
            conn.execute(sa.text(f"DELETE FROM product_images WHERE id IN {tuple(gone)}"))
        child = subprocess.Popen(
            [sys.executable, "-c", UPDATE, shop.url, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "started", child.stderr.read()
        time.sleep(delay)
        child.kill()
        child.wait()
        outcomes.append(child.returncode)
        update_similarities(shop.schema, MODEL, 20)  # the next one, as the automation would start it
        shop.exact_now()
    assert outcomes.count(-signal.SIGKILL) >= 4, outcomes  # most were killed mid-update, not after it
