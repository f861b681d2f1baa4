"""The asset checks: garbage never reaches product_embeddings, failures and missing products are reported."""

import datetime as dt
import json

import sqlalchemy as sa
from conftest import DAYS, TODAY, definitions, make_resources, materialize_chain

from replicate_assets.db import engine_for
from replicate_assets.testing.sample_shop import build_sample_shop


def evaluation(result, name):
    [found] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return found


def test_embedding_dimensions_blocks_garbage_from_product_embeddings(
    sqlite_url, image_server, fresh_emulator, tmp_path
):
    defs = definitions()
    build_sample_shop(engine_for(sqlite_url), image_server, products=20, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    product_images = defs.get_assets_def("product_images")
    clip = defs.get_assets_def("clip_embeddings")
    instance = __import__("dagster").DagsterInstance.ephemeral()
    materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance, selection=[product_images, clip])
    # Something (a bug, a hand edit) left garbage in outcomes that embedding_table would publish.
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(
            sa.text("UPDATE clip_embedding_outcomes SET embedding = :e WHERE product_image_id = 1"),
            {"e": json.dumps([0.0] * 768)},
        )
        conn.execute(
            sa.text("UPDATE clip_embedding_outcomes SET embedding = :e WHERE product_image_id = 2"),
            {"e": json.dumps([0.1] * 512)},
        )
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance, raise_on_error=False)
    check = evaluation(result, "embedding_dimensions")
    assert not check.passed and check.blocking
    assert check.metadata["embeddings_rejected"].value == 2
    assert check.metadata["first_rejected_image_ids"].value == [1, 2]
    assert not result.success  # the blocking check stopped the run before embedding_table
    assert not result.asset_materializations_for_node("embedding_table")
    with engine_for(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one() == 0
        rows = conn.execute(
            sa.text("SELECT status, error FROM clip_embedding_outcomes WHERE product_image_id IN (1, 2)")
        ).all()
    assert all(status == "failed" and "embedding_dimensions" in error for status, error in rows)

    # The next run publishes the good ones only; the two rejected images are embedded again.
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], instance=instance)
    assert evaluation(result, "embedding_dimensions").passed
    with engine_for(sqlite_url).connect() as conn:
        vectors = [json.loads(r[0]) for r in conn.execute(sa.text("SELECT embedding FROM product_embeddings"))]
    assert vectors and all(len(v) == 768 and any(v) for v in vectors)


def test_failed_images_warns_with_reasons_once_attempts_are_used_up(sqlite_url, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=60, days=3, today=TODAY)
    result = materialize_chain(
        make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1]
    )
    check = evaluation(result, "failed_images")
    unusable = [i for i, why in shop.broken.items() if "404" not in why]  # unusable paths fail for good at once
    assert not check.passed and check.severity.value == "WARN"
    assert result.success  # a warning does not fail the run
    assert check.metadata["failed_images"].value == len(unusable)
    reasons = check.metadata["reasons"].value
    assert sum(reasons.values()) == len(unusable) and all(r.startswith("invalid image path") for r in reasons)


def test_products_without_embeddings_reports_per_partition(sqlite_url, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=60, days=3, today=TODAY)
    with engine_for(sqlite_url).begin() as conn:  # a product whose only image is dead, on a known day
        conn.execute(
            sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (900, 'x', :d, :d)"),
            {"d": dt.datetime(2025, 1, 16, 9)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) VALUES "
                "(900, 900, 'nowhere/900.png', :d, :d)"
            ),
            {"d": dt.datetime(2025, 1, 16, 9)},
        )
    result = materialize_chain(
        make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1]
    )
    check = evaluation(result, "products_without_embeddings")
    per_partition = check.metadata["per_partition"].value
    assert per_partition.get("2025-01-16", 0) >= 1
    assert sum(per_partition.values()) >= check.metadata["products_without_embeddings"].value
    assert 900 in check.metadata["first_product_ids"].value
    assert check.metadata["window"].value == f"{DAYS[0]}...{DAYS[-1]}"
    assert shop.products_without_images == check.metadata["products_without_images"].value
