"""Search at query time: the `search` command and the HTTP API (`serve`), run as a user runs them, against a shop
embedded by a real Dagster run, on SQLite, PostgreSQL and MariaDB.

What a user relies on: results are products that mean what was asked (the emulator's stand-in semantics); a
repeated text or image query costs no prediction; bad input is a clear 4xx or one line; paid queries are capped.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import sqlalchemy as sa
from conftest import (
    DAYS,
    TODAY,
    creates,
    free_port,
    make_resources,
    materialize_chain,
    run,
    start_serve,
    stop,
)

from replicate_assets.db import connect, engine_for
from replicate_assets.db.vectors import VectorStore
from replicate_assets.testing.sample_shop import build_sample_shop, png

TEXT = "red leather bag"


def single_image_product(shop_url: str) -> tuple[int, str]:
    """A product with exactly one image that no other product shows: (product id, its image URL)."""
    with engine_for(shop_url).connect() as conn:
        rows = conn.execute(sa.text("SELECT product_id, image_url FROM product_embeddings ORDER BY product_id")).all()
    owners: dict[str, set[int]] = {}
    images: dict[int, list[str]] = {}
    for product, url in rows:
        owners.setdefault(url, set()).add(int(product))
        images.setdefault(int(product), []).append(url)
    return next((p, urls[0]) for p, urls in images.items() if len(urls) == 1 and len(owners[urls[0]]) == 1)


def test_search_by_words_photo_and_product_from_the_command_line(shop_url, searchable, fresh_emulator):
    shop, env = searchable
    first = run(["replicate-assets", "search", "--text", TEXT, "--json"], env)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["cached"] is False and len(answer["results"]) == 10
    assert {"product_id", "name", "score", "image_url"} <= set(answer["results"][0])
    # Meaning: the best matches are red leather bags, best first.
    assert all(shop.categories[hit["product_id"]] == TEXT for hit in answer["results"][:3])
    scores = [hit["score"] for hit in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    assert creates(fresh_emulator) == 1
    # The same words again: from the cache, no prediction, the same answer.
    again = json.loads(run(["replicate-assets", "search", "--text", TEXT, "--json"], env).stdout)
    assert again["cached"] is True and again["results"] == answer["results"]
    assert creates(fresh_emulator) == 1

    product, url = single_image_product(shop_url)
    by_photo = json.loads(run(["replicate-assets", "search", "--image", url, "--limit", "3", "--json"], env).stdout)
    assert len(by_photo["results"]) == 3
    assert by_photo["results"][0]["product_id"] == product and by_photo["results"][0]["score"] > 0.999
    assert creates(fresh_emulator) == 2

    with engine_for(shop_url).connect() as conn:
        listed = conn.execute(
            sa.text("SELECT similar_product_id, score FROM product_similarities WHERE product_id = :p ORDER BY rank"),
            {"p": product},
        ).all()
    like = json.loads(run(["replicate-assets", "search", "--like-product", str(product), "--json"], env).stdout)
    assert [h["product_id"] for h in like["results"]] == [int(q) for q, _ in listed[:10]]
    assert product not in [h["product_id"] for h in like["results"]]
    # A product without a list is searched from its own vectors, read alone (not the whole catalogue).
    store = VectorStore(connect(shop_url))
    images = store.catalogue("openai/clip").images
    assert np.array_equal(store.product_vectors("openai/clip", product), images.vectors[images.products == product])
    assert len(store.product_vectors("openai/clip", 999_999)) == 0
    assert creates(fresh_emulator) == 2  # a product's neighbours cost nothing

    floor = json.loads(run(["replicate-assets", "search", "--text", TEXT, "--min-score", "0.9", "--json"], env).stdout)
    assert all(h["score"] >= 0.9 for h in floor["results"]) and len(floor["results"]) < 10

    shown = run(["replicate-assets", "search", "--text", TEXT, "--limit", "2"], env)
    assert shown.returncode == 0
    assert "(2 products for text 'red leather bag'; no prediction (cached)" in shown.stdout
    assert TEXT.capitalize() in shown.stdout  # product names


def test_the_command_line_says_what_is_wrong_in_one_line(searchable, fresh_emulator):
    _, env = searchable
    cases = {
        ("--image", "ftp://files.example/x.png"): "error: image must be an http(s) URL",
        ("--like-product", "999999"): "error: product 999999 does not exist (or is deleted)",
        ("--like-product", "99999999999999999999999999"): "error: product 99999999999999999999999999 does not exist",
        ("--text", TEXT, "--limit", "0"): "error: --limit=0 is out of range: between 1 and 100",
        ("--text", "   "): "error: text is empty",
        ("--text", ""): "error: text is empty",
        ("--text", "red\x1bbag"): "error: text holds a control or unassigned character (U+001B)",
        ("--text", TEXT, "--min-score", "nan"): "error: --min-score='nan' is not a number",
        ("--text", TEXT, "--limit", "\u0661"): "error: --limit='\u0661' is not a whole number",
    }
    for arguments, message in cases.items():
        done = run(["replicate-assets", "search", *arguments], env)
        assert done.returncode != 0 and message in done.stderr, (arguments, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert creates(fresh_emulator) == 0  # nothing asked wrongly was sent, let alone paid
    refused = run(["replicate-assets", "search", "--text", TEXT], {**env, "REPLICATE_API_TOKEN": "r8_wrong_token"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "r8_wrong_token" not in refused.stderr + refused.stdout
    assert "token" in refused.stderr.lower()
    assert creates(fresh_emulator) <= 1


@pytest.fixture
def served(searchable) -> Iterator[tuple[str, dict, object]]:
    """`replicate-assets serve` on loopback, at most 2 new (paid) queries a minute."""
    shop, env = searchable
    server, base, health = start_serve({**env, "SEARCH_QUERIES_PER_MINUTE": "2"})
    try:
        assert health.status_code == 200, health.text
        yield base, shop, server
    finally:
        stop(server, signal.SIGINT)


def test_the_http_api_answers_the_shop(shop_url, served, fresh_emulator):
    base, shop, _ = served
    health = requests.get(f"{base}/health", timeout=5).json()
    assert health["status"] == "ok" and health["images"] > 0 and health["products"] > 0

    found = requests.get(f"{base}/search", params={"text": TEXT, "limit": 5}, timeout=30)
    assert found.status_code == 200
    body = found.json()
    assert body["cached"] is False and len(body["results"]) == 5 and body["query"] == {"text": TEXT, "limit": 5}
    assert all(shop.categories[hit["product_id"]] == TEXT for hit in body["results"][:3])
    again = requests.get(f"{base}/search", params={"text": f"  {TEXT} ", "limit": 5}, timeout=30).json()
    assert again["cached"] is True and again["results"] == body["results"]
    assert creates(fresh_emulator) == 1

    product, url = single_image_product(shop_url)
    similar = requests.get(f"{base}/products/{product}/similar", params={"limit": 3}, timeout=30)
    assert similar.status_code == 200
    with engine_for(shop_url).connect() as conn:
        listed = conn.execute(
            sa.text("SELECT similar_product_id FROM product_similarities WHERE product_id = :p ORDER BY rank"),
            {"p": product},
        ).all()
    assert [h["product_id"] for h in similar.json()["results"]] == [int(q) for (q,) in listed[:3]]
    by_photo = requests.get(f"{base}/search", params={"image": url}, timeout=30).json()
    assert by_photo["results"][0]["product_id"] == product

    bad = {
        "/search": "ask with exactly one of text=... or image=URL",
        f"/search?text={TEXT}&image={url}": "ask with exactly one of text=... or image=URL",
        "/search?text=bag&limit=abc": "limit='abc' is not a whole number",
        "/search?text=bag&limit=0": "limit=0 is out of range: between 1 and 100",
        "/search?text=bag&min_score=2": "min_score=2 is out of range: a cosine between -1 and 1",
        "/search?text=%20%20": "text is empty",
        "/search?image=ftp://files.example/x.png": "image must be an http(s) URL",
    }
    for path, message in bad.items():
        answer = requests.get(base + path, timeout=10)
        assert answer.status_code == 400 and message in answer.json()["detail"], (path, answer.text)
    unknown = requests.get(f"{base}/products/999999/similar", timeout=10)
    assert unknown.status_code == 404 and "product 999999" in unknown.json()["detail"]
    assert creates(fresh_emulator) == 2  # bad queries cost nothing

    # The cap: 2 new queries a minute (text and photo above); a third new one is refused and says why.
    capped = requests.get(f"{base}/search", params={"text": "blue running shoe"}, timeout=10)
    assert capped.status_code == 429 and int(capped.headers["Retry-After"]) > 0
    assert "cap of 2 new text or image queries a minute" in capped.json()["detail"]
    assert requests.get(f"{base}/search", params={"text": TEXT}, timeout=10).status_code == 200  # cached: free
    assert creates(fresh_emulator) == 2


def test_listening_beyond_loopback_needs_an_api_key(searchable):
    _, env = searchable
    refused = run(["replicate-assets", "serve", "--host", "0.0.0.0", "--port", str(free_port())], env, timeout=60)
    assert refused.returncode == 1
    assert "error: --host 0.0.0.0 listens beyond this machine: set SEARCH_API_KEY first" in refused.stderr
    key = "k3y-for-the-shop"
    server, base, health = start_serve({**env, "SEARCH_API_KEY": key}, "--host", "0.0.0.0")
    try:  # /health stays open: a load balancer probes it
        assert health.status_code in (200, 503)
        path = f"{base}/products/1/similar"
        assert requests.get(path, timeout=10).status_code == 401
        assert requests.get(path, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
        assert requests.get(path, headers={"X-API-Key": key}, timeout=10).status_code in (200, 404)
        assert requests.get(path, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code in (200, 404)
    finally:
        out, err = stop(server, signal.SIGINT)
    assert key not in out + err


def test_searching_before_the_similarity_assets_ran_says_what_to_run_and_pays_nothing(
    env, sqlite_url, image_server, fresh_emulator
):
    build_sample_shop(engine_for(sqlite_url), image_server, products=10, days=3, today=TODAY)
    for arguments in (["--text", TEXT], ["--like-product", "3"]):
        done = run(["replicate-assets", "search", *arguments], env)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: nothing to search for openai/clip yet")
        assert "--select product_similarities,similarity_index" in done.stderr
    refused = run(["replicate-assets", "serve", "--port", str(free_port())], env, timeout=60)
    assert refused.returncode == 1 and "nothing to search for openai/clip yet" in refused.stderr
    assert creates(fresh_emulator) == 0
    with engine_for(sqlite_url).connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"products", "product_images"}  # nothing written


def test_answers_are_true_now_deleted_products_are_gone_and_new_ones_answered(
    shop_url, searchable, image_server, fresh_emulator
):
    """Between two runs of the similarity assets: a soft-deleted and a deleted product vanish from every answer
    (their own list is a 404), and a product embedded after the lists were computed gets neighbours from the live
    index, marked as such, never a false 'no embedded image'."""
    shop, env = searchable
    with engine_for(shop_url).connect() as conn:
        listed = conn.execute(
            sa.text("SELECT product_id, similar_product_id FROM product_similarities WHERE rank <= 2 ORDER BY 1, 2")
        ).all()
    asker, soft, gone = next((p, q, r) for (p, q), (p2, r) in zip(listed, listed[1:], strict=False) if p == p2)
    with engine_for(shop_url).begin() as conn:
        conn.execute(
            sa.text("UPDATE products SET deleted_at = :t WHERE id = :p"), {"t": dt.datetime(2025, 2, 1), "p": soft}
        )
        for table, column in (
            ("product_embeddings", "product_id"),
            ("product_images", "product_id"),
            ("products", "id"),
        ):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = :p"), {"p": gone})  # as the FKs cascade
    like = json.loads(run(["replicate-assets", "search", "--like-product", str(asker), "--json"], env).stdout)
    shown = {hit["product_id"] for hit in like["results"]}
    assert not {soft, gone} & shown and len(shown) == 5 - 2  # its list of K=5, less the two gone
    by_text = json.loads(run(["replicate-assets", "search", "--text", TEXT, "--limit", "40", "--json"], env).stdout)
    assert not {soft, gone} & {hit["product_id"] for hit in by_text["results"]}
    for product in (soft, gone):
        refused = run(["replicate-assets", "search", "--like-product", str(product)], env)
        assert refused.returncode == 1 and f"product {product} does not exist (or is deleted)" in refused.stderr

    # A product embedded after the lists: it has rows in product_embeddings, and is answered from them.
    new_id = 9000
    image_server.images["late/0.png"] = png(9000, category="red leather bag")
    with engine_for(shop_url).begin() as conn:
        stamp = dt.datetime(2025, 1, 17, 12)
        conn.execute(
            sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (:p, 'Late bag', :t, :t)"),
            {"p": new_id, "t": stamp},
        )
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (9000, :p, :u, :t, :t)"
            ),
            {"p": new_id, "u": f"{image_server.base_url}/late/0.png", "t": stamp},
        )
    resources = make_resources(shop_url, image_server, fresh_emulator, Path(env["SIMILARITY_INDEX_DIR"]).parent)
    assert materialize_chain(resources, partition=DAYS[-1]).success  # embedded; the similarity assets not run
    late = run(["replicate-assets", "search", "--like-product", str(new_id), "--json"], env)
    assert late.returncode == 0, late.stderr
    hits = json.loads(late.stdout)["results"]
    assert hits and all(hit["live"] for hit in hits) and new_id not in {hit["product_id"] for hit in hits}
    assert shop.categories[hits[0]["product_id"]] == "red leather bag"  # it means what it shows
