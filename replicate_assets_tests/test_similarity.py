"""Similar products, duplicates and search, on SQLite, PostgreSQL and MariaDB, against a reference computed here.

The reference is brute force with numpy over product_embeddings: a product's score against another is the best
pair of their images (cosine of unit vectors); never itself, never a product that shows the very same image
(same URL or an identical vector), never a soft-deleted product.
"""

import dataclasses
import datetime as dt
import json
from collections import defaultdict

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import DAYS, TODAY, make_resources, materialize_chain, similarity_run

from replicate_assets.db import connect, engine_for
from replicate_assets.testing.sample_shop import build_sample_shop, png

K = 5


def reference(url: str, k: int = K) -> dict[int, list[tuple[int, float]]]:
    """Brute force over product_embeddings: every live product's top k."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT e.product_id, e.image_url, e.embedding FROM product_embeddings e JOIN products p "
                "ON p.id = e.product_id WHERE p.deleted_at IS NULL"
            )
        ).all()
    products = np.array([r.product_id for r in rows])
    vectors = np.array([r.embedding if isinstance(r.embedding, list) else json.loads(r.embedding) for r in rows], float)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    urls = [r.image_url for r in rows]
    same = {
        (products[i], products[j])
        for i in range(len(rows))
        for j in range(len(rows))
        if urls[i] == urls[j] or np.array_equal(vectors[i], vectors[j])
    }
    best: dict[tuple[int, int], float] = {}
    for i in range(len(rows)):
        for j in range(len(rows)):
            p, q = int(products[i]), int(products[j])
            if p != q and (p, q) not in same:
                best[(p, q)] = max(best.get((p, q), -2.0), float(sims[i, j]))
    lists = defaultdict(list)
    for (p, q), s in best.items():
        lists[p].append((q, s))
    return {p: sorted(v, key=lambda x: (-x[1], x[0]))[:k] for p, v in lists.items()}


def stored(url: str) -> dict[int, list[tuple[int, float]]]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT product_id, similar_product_id, score FROM product_similarities ORDER BY product_id, rank")
        ).all()
    found = defaultdict(list)
    for p, q, s in rows:
        found[int(p)].append((int(q), float(s)))
    return dict(found)


def assert_same_lists(found, expected):
    assert set(found) == set(expected)
    for product, listed in expected.items():
        got = found[product]
        assert [q for q, _ in got] == [q for q, _ in listed], f"product {product}: {got} != {listed}"
        assert np.allclose([s for _, s in got], [s for _, s in listed], atol=1e-5)


@pytest.fixture
def embedded(shop_url, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(engine_for(shop_url), image_server, products=40, days=3, today=TODAY)
    resources = make_resources(shop_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    return shop, resources


def test_lists_are_the_exact_top_k_with_duplicates_apart(shop_url, embedded, tmp_path):
    shop, resources = embedded
    result = similarity_run(resources, tmp_path)
    assert result.success
    assert_same_lists(stored(shop_url), reference(shop_url))
    with engine_for(shop_url).connect() as conn:
        duplicates = conn.execute(
            sa.text("SELECT product_id, duplicate_product_id, reason FROM product_duplicates")
        ).all()
        several = conn.execute(
            sa.text("SELECT product_id FROM product_embeddings GROUP BY product_id HAVING COUNT(*) > 1")
        ).all()
    # Products 2 and 6 share an image URL (the sample shop's doing): duplicates, never "similar".
    pairs = {(int(p), int(q)): why for p, q, why in duplicates}
    assert pairs[(2, 6)] == pairs[(6, 2)] == "same image URL"
    assert 6 not in [q for q, _ in stored(shop_url)[2]]
    assert several  # products with several images: their score is the best pair
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    assert metadata["mode"].value == "full" and metadata["rows_written"].value == sum(
        map(len, stored(shop_url).values())
    )
    # The lists mean something: with the emulator's stand-in semantics, similar products share a category (but for
    # the sample shop's products that show another product's image).
    lists = stored(shop_url)
    same = [shop.categories[listed[0][0]] == shop.categories[product] for product, listed in lists.items()]
    assert sum(same) >= 0.9 * len(lists)


def test_an_increment_gives_the_same_lists_as_a_rebuild(shop_url, embedded, image_server, fresh_emulator, tmp_path):
    shop, resources = embedded
    instance = dg.DagsterInstance.ephemeral()
    assert similarity_run(resources, tmp_path, instance=instance).success
    engine = engine_for(shop_url)
    new_day = dt.datetime(2025, 1, 17, 20)
    with engine.begin() as conn:  # a day's new products and images, a changed image, a soft delete
        for product in (901, 902, 903):
            conn.execute(
                sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (:i, :n, :d, :d)"),
                {"i": product, "n": f"New {product}", "d": new_day},
            )
        for image, product, category in (
            (9001, 901, "red leather bag"),
            (9002, 901, "pink silk scarf"),
            (9003, 902, "blue running shoe"),
            (9004, 903, "green ceramic mug"),
        ):
            image_server.images[f"new/{image}.png"] = png(image, category=category)
            conn.execute(
                sa.text(
                    "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                    "VALUES (:i, :p, :path, :d, :d)"
                ),
                {"i": image, "p": product, "path": f"new/{image}.png", "d": new_day},
            )
        image_server.images["changed/1.png"] = png(777, category="yellow rain jacket")
        conn.execute(
            sa.text("UPDATE product_images SET path = 'changed/1.png', updated_at = :d WHERE id = 1"), {"d": new_day}
        )
        conn.execute(sa.text("UPDATE products SET deleted_at = :d WHERE id = 4"), {"d": new_day})
        several = conn.execute(  # an image deleted outright (its embedding goes with it), its product stays
            sa.text(
                "SELECT MAX(e.product_image_id) FROM product_embeddings e WHERE e.product_id IN (SELECT product_id "
                "FROM product_embeddings WHERE product_id NOT IN (1, 4) GROUP BY product_id HAVING COUNT(*) > 1)"
            )
        ).scalar_one()
        conn.execute(sa.text("DELETE FROM product_images WHERE id = :i"), {"i": several})
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    result = similarity_run(resources, tmp_path, instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    assert metadata["mode"].value == "incremental"
    assert metadata["lists_written"].value < len(stored(shop_url))  # not every list was written again
    # computed against every image: the three new products, product 1 (changed) and the lists that showed 1, 4 or
    # the image deleted; the other lists written only took the new products' offered scores
    assert 4 <= metadata["lists_recomputed"].value <= metadata["lists_written"].value
    incremental = stored(shop_url)
    assert 4 not in incremental and all(4 not in [q for q, _ in v] for v in incremental.values())  # soft-deleted
    assert {901, 902, 903} <= set(incremental)
    assert_same_lists(incremental, reference(shop_url))
    rebuilt = similarity_run(resources, tmp_path, full=True, instance=instance)
    assert rebuilt.asset_materializations_for_node("product_similarities")[0].metadata["mode"].value == "full"
    assert_same_lists(stored(shop_url), incremental)


def test_a_new_model_rebuilds_every_list(sqlite_url, image_server, fresh_emulator, tmp_path):
    build_sample_shop(engine_for(sqlite_url), image_server, products=12, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    assert similarity_run(resources, tmp_path).success
    other = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path, model="krthr/clip-embeddings")
    assert materialize_chain(other, first=DAYS[0], last=DAYS[-1]).success
    result = similarity_run(other, tmp_path)
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    assert metadata["mode"].value == "full" and "the model changed" in metadata["reason"].value
    with engine_for(sqlite_url).connect() as conn:
        models = {m for (m,) in conn.execute(sa.text("SELECT DISTINCT model FROM product_similarities"))}
    assert models == {"krthr/clip-embeddings:" + "1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4"}


def test_the_checks_fail_on_bad_data_and_pass_on_good(sqlite_url, image_server, fresh_emulator, tmp_path):
    build_sample_shop(engine_for(sqlite_url), image_server, products=16, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    good = similarity_run(resources, tmp_path)
    verdicts = {e.check_name: e.passed for e in good.get_asset_check_evaluations()}
    assert verdicts == {
        "similarity_index_recall": True,
        "search_vectors": True,
        "products_without_neighbours": True,
        "similarity_lag": True,
    }
    schema = connect(sqlite_url)
    with schema.engine.begin() as conn:  # a vector that is not unit length, and a product whose list is lost
        conn.execute(
            sa.update(schema.vectors)
            .where(schema.vectors.c.product_image_id == 1)
            .values(vector=np.full(768, 0.5, dtype=np.float32).tobytes())
        )
        conn.execute(sa.text("DELETE FROM product_similarities WHERE product_id = 2"))
    bad = similarity_run(resources, tmp_path, selection=("product_similarities",))
    evaluations = {e.check_name: e for e in bad.get_asset_check_evaluations()}
    assert not evaluations["search_vectors"].passed
    assert evaluations["search_vectors"].metadata["first_not_unit_image_ids"].value == [1]
    assert not evaluations["products_without_neighbours"].passed
    assert 2 in evaluations["products_without_neighbours"].metadata["first_product_ids"].value


def test_an_index_that_misses_neighbours_fails_its_blocking_check(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.db.vectors import VectorStore
    from replicate_assets.similarity.index import SearchIndex, build

    build_sample_shop(engine_for(sqlite_url), image_server, products=16, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    assert similarity_run(resources, tmp_path).success
    images = VectorStore(connect(sqlite_url)).catalogue("openai/clip").images
    # An index whose vectors are not the images' (a corrupted or stale file): it finds the wrong neighbours.
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(images.vectors.shape).astype(np.float32)
    wrong = build(
        dataclasses.replace(images, vectors=noise / np.linalg.norm(noise, axis=1, keepdims=True)), "openai/clip"
    )
    SearchIndex("ivf", "openai/clip", images.ids, images.products, wrong.index).save(tmp_path / "index")
    result = similarity_run(resources, tmp_path, selection=())  # the checks alone, on the files as they are
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "similarity_index_recall"]
    assert not check.passed and check.blocking and check.metadata["recall_at_10"].value < 0.95
    assert not result.success  # a blocking check that fails fails the run


def test_pgvector_holds_the_live_vectors_for_sql_search(pgvector_url, image_server, fresh_emulator, tmp_path):
    """Where PostgreSQL has pgvector, product_image_vectors follows the live vectors, with an HNSW index the shop
    can query in SQL; elsewhere the metadata says why there is none."""
    engine = engine_for(pgvector_url)
    build_sample_shop(engine, image_server, products=40, days=3, today=TODAY)
    resources = make_resources(pgvector_url, image_server, fresh_emulator, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    result = similarity_run(resources, tmp_path, instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    assert metadata["sql_vector_index"].value.startswith("pgvector: ")

    def live_vectors() -> dict[int, np.ndarray]:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT e.product_image_id, e.embedding FROM product_embeddings e "
                    "JOIN products p ON p.id = e.product_id WHERE p.deleted_at IS NULL"
                )
            ).all()
        vectors = {int(i): np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=np.float64) for i, v in rows}
        return {i: v / np.linalg.norm(v) for i, v in vectors.items()}

    vectors = live_vectors()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM product_image_vectors")).scalar_one() == len(vectors)
        index = conn.execute(
            sa.text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'product_image_vectors' AND indexdef LIKE '%hnsw%'"
            )
        ).scalar_one()
        assert "vector_cosine_ops" in index
        # The shop's query: the images nearest one image, by cosine distance; the same order as numpy's.
        query = next(iter(vectors))
        found = conn.execute(
            sa.text(
                "SELECT product_image_id, 1 - (embedding <=> (SELECT embedding FROM product_image_vectors "
                "WHERE product_image_id = :q)) AS score FROM product_image_vectors ORDER BY embedding <=> "
                "(SELECT embedding FROM product_image_vectors WHERE product_image_id = :q) LIMIT 5"
            ),
            {"q": query},
        ).all()
    ids = np.array(list(vectors))
    sims = np.array([vectors[query] @ vectors[i] for i in ids])
    expected = ids[np.argsort(-sims, kind="stable")[:5]].tolist()
    assert [int(i) for i, _ in found] == expected
    assert np.allclose([s for _, s in found], np.sort(sims)[::-1][:5], atol=1e-5)

    # A soft delete and a new image: the next increment follows them.
    image_server.images["new/9001.png"] = png(9001, category="red leather bag")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE products SET deleted_at = :d WHERE id = 3"), {"d": dt.datetime(2025, 1, 17, 21)})
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (9001, 5, 'new/9001.png', :d, :d)"
            ),
            {"d": dt.datetime(2025, 1, 17, 21)},
        )
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance).success
    assert similarity_run(resources, tmp_path, instance=instance).success
    with engine.connect() as conn:
        stored = {
            int(i): int(p)
            for i, p in conn.execute(sa.text("SELECT product_image_id, product_id FROM product_image_vectors"))
        }
    assert set(stored) == set(live_vectors()) and 9001 in stored and 3 not in stored.values()


def test_without_pgvector_the_metadata_says_why(shop_url, embedded, tmp_path):
    _, resources = embedded
    metadata = similarity_run(resources, tmp_path).asset_materializations_for_node("product_similarities")[0].metadata
    reason = metadata["sql_vector_index"].value
    assert reason.startswith("none: ")
    assert "pgvector extension is not installed" in reason or "has no vector index here" in reason
    with engine_for(shop_url).connect() as conn:
        assert "product_image_vectors" not in sa.inspect(conn).get_table_names()


def test_messy_rows_in_product_embeddings_are_left_out_and_counted(sqlite_url, image_server, fresh_emulator, tmp_path):
    """product_embeddings is public: other code (the Laravel version) may have written rows that are no vectors."""
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=40, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    messy = {5: json.dumps([0.1] * 512), 57: "not json", 9001: json.dumps({"a": 1}), 9002: json.dumps([0.0] * 768)}
    assert {5, 57} <= set(shop.broken)  # images the pipeline could not embed: no row of ours yet
    with engine_for(sqlite_url).begin() as conn:
        for image in (9001, 9002):  # images added after the run, with rows some other code wrote
            conn.execute(
                sa.text(
                    "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                    "VALUES (:i, 1, 'x.png', :d, :d)"
                ),
                {"i": image, "d": dt.datetime(2025, 1, 17)},
            )
        for image, embedding in messy.items():
            product = conn.execute(sa.text("SELECT product_id FROM product_images WHERE id = :i"), {"i": image})
            conn.execute(
                sa.text(
                    "INSERT INTO product_embeddings (product_image_id, product_id, model, dimensions, embedding, "
                    "created_at, updated_at) VALUES (:i, :p, 'openai/clip', 768, :e, :d, :d)"
                ),
                {"i": image, "p": product.scalar_one(), "e": embedding, "d": dt.datetime(2025, 1, 17)},
            )
    result = similarity_run(resources, tmp_path)
    assert result.success
    metadata = result.asset_materializations_for_node("product_similarities")[0].metadata
    assert metadata["vectors_skipped"].value == len(messy)
    with engine_for(sqlite_url).connect() as conn:
        copied = set(conn.execute(sa.text("SELECT product_image_id FROM clip_image_vectors")).scalars())
    assert not copied & set(messy)
    with engine_for(sqlite_url).begin() as conn:  # the reference reads product_embeddings: without the messy rows
        conn.execute(sa.text(f"DELETE FROM product_embeddings WHERE product_image_id IN {tuple(messy)}"))
    assert_same_lists(stored(sqlite_url), reference(sqlite_url))


def test_the_lag_check_says_how_far_the_lists_are_behind(shop_url, image_server, fresh_emulator, tmp_path):
    """Embeddings newer than the lists are counted with their products and the oldest one's wait; beyond
    SIMILARITY_MAX_LAG_MINUTES (60) the check WARNs with what to look at; once the lists run, nothing lags."""
    build_sample_shop(engine_for(shop_url), image_server, products=12, days=3, today=TODAY)
    resources = make_resources(shop_url, image_server, fresh_emulator, tmp_path)
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success

    def lag():
        result = similarity_run(resources, tmp_path, selection=())  # the checks alone, as the automation runs it
        [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "similarity_lag"]
        return check

    with engine_for(shop_url).connect() as conn:
        images, products = conn.execute(
            sa.text("SELECT COUNT(*), COUNT(DISTINCT product_id) FROM product_embeddings")
        ).one()
    fresh = lag()  # embeddings just landed, no lists yet: behind, but not for long
    assert fresh.passed and fresh.metadata["images_behind"].value == images
    assert fresh.metadata["products_behind"].value == products
    with engine_for(shop_url).begin() as conn:  # they have waited two hours
        conn.execute(
            sa.text("UPDATE product_embeddings SET updated_at = :t"),
            {"t": dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=2)},
        )
    stale = lag()
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert 119 <= stale.metadata["oldest_lag_minutes"].value <= 125
    assert "is the similarity_automation sensor running" in stale.description
    assert similarity_run(resources, tmp_path).success
    caught_up = lag()
    assert caught_up.passed and caught_up.metadata["images_behind"].value == 0
