"""Shops as they are: a server in another time zone, orphan rows, an old latin1 database, rows no partition
covers, renamed columns, paths that would inject inputs. Each gets its images embedded or one clear reason."""

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from conftest import (
    DAYS,
    TODAY,
    chain_command,
    drop_server_database,
    make_resources,
    materialize_chain,
    run,
    server_database,
)

from replicate_assets.db import Changes, connect, engine_for
from replicate_assets.testing.emulator import embedding_for
from replicate_assets.testing.sample_shop import build_sample_shop, png


def evaluation(result, name):
    [found] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return found


def outcome(url, image_id):
    with engine_for(url).connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT status, error, attempts, image_url FROM clip_embedding_outcomes WHERE product_image_id = :i"
            ),
            {"i": image_id},
        ).one()


def stored_vector(url, image_id):
    with engine_for(url).connect() as conn:
        raw = conn.execute(
            sa.text("SELECT embedding FROM product_embeddings WHERE product_image_id = :i"), {"i": image_id}
        ).scalar_one()
    return raw if isinstance(raw, list) else json.loads(raw)


def insert_image(url, image_id, product_id, path, created, updated=None):
    with engine_for(url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (:i, :p, :path, :c, :u)"
            ),
            {"i": image_id, "p": product_id, "path": path, "c": created, "u": updated or created},
        )


# -- a PostgreSQL server whose time zone is not UTC -----------------------------------------------------------------


@pytest.mark.postgres
def test_partitions_are_utc_days_whatever_the_servers_time_zone(image_server, fresh_emulator, tmp_path):
    url = server_database("postgresql")
    try:
        with sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(sa.text(f"ALTER DATABASE {sa.make_url(url).database} SET timezone TO 'America/New_York'"))
        build_sample_shop(engine_for(url), image_server, products=4, days=3, today=TODAY, timestamps="aware")
        image_server.images["tz/1.png"] = png(4711)
        # 02:00 UTC on Jan 1st is still Dec 31st in New York: it belongs to the partition 2025-01-01.
        insert_image(url, 900, 1, "tz/1.png", dt.datetime(2025, 1, 1, 2, tzinfo=dt.UTC))
        reports = Changes(connect(url))
        assert dt.date(2025, 1, 1) in reports.days_needing_work("openai/clip", 3, 60, dt.datetime(2100, 1, 1))
        result = materialize_chain(make_resources(url, image_server, fresh_emulator, tmp_path), partition="2025-01-01")
        assert result.success
        assert stored_vector(url, 900) == embedding_for(png(4711))
        assert dt.date(2025, 1, 1) not in reports.days_needing_work("openai/clip", 3, 60, dt.datetime(2100, 1, 1))
    finally:
        drop_server_database(url)


# -- orphan images: a product_id with no product --------------------------------------------------------------------


def test_orphan_images_are_skipped_with_a_reason_and_block_nothing(
    shop_url, image_server, fresh_emulator, tmp_path, env
):
    engine = engine_for(shop_url)
    build_sample_shop(engine, image_server, products=12, days=3, today=TODAY, foreign_keys=False)  # never enforced
    image_server.images["orphan/1.png"] = png(5150)
    created = dt.datetime(2025, 1, 16, 10)
    insert_image(shop_url, 901, 99901, "orphan/1.png", created)
    insert_image(shop_url, 902, 99902, "orphan/1.png", created)
    result = materialize_chain(
        make_resources(shop_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1]
    )
    assert result.success  # the orphans block nothing: every valid image is published
    for image_id in (901, 902):
        row = outcome(shop_url, image_id)
        assert row.status == "failed" and "orphan image: product #999" in row.error and row.image_url is None
    assert f"{image_server.base_url}/orphan/1.png" not in fresh_emulator.creates_per_input()  # never sent
    with engine.connect() as conn:
        published = conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one()
        failed = conn.execute(
            sa.text("SELECT COUNT(*) FROM clip_embedding_outcomes WHERE status = 'failed'")
        ).scalar_one()
        images = conn.execute(sa.text("SELECT COUNT(*) FROM product_images")).scalar_one()
    assert published == images - failed and published > 0
    check = evaluation(result, "products_without_embeddings")
    assert check.metadata["orphan_images"].value == 2
    assert check.metadata["first_orphan_image_ids"].value == [901, 902]
    status = run(["replicate-assets", "status"], {**env, "DATABASE_URL": shop_url})
    assert "orphan images (product_id names no product): 2, e.g. ProductImage #901, #902" in status.stdout


# -- an old MariaDB database whose default charset is latin1 ----------------------------------------------------------


@pytest.mark.mariadb
def test_our_tables_are_utf8mb4_on_a_latin1_database(image_server, fresh_emulator, tmp_path):
    url = server_database("mariadb")
    name = sa.make_url(url).database
    try:
        with sa.create_engine(sa.make_url(url).set(database="mysql"), isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(sa.text(f"ALTER DATABASE {name} CHARACTER SET latin1 COLLATE latin1_swedish_ci"))
        build_sample_shop(engine_for(url), image_server, products=6, days=3, today=TODAY)  # Laravel's: utf8mb4
        image_server.images["商品/写真.png"] = png(8888)
        insert_image(url, 900, 1, "商品/写真.png", dt.datetime(2025, 1, 16, 9))
        result = materialize_chain(
            make_resources(url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1]
        )
        assert result.success
        assert stored_vector(url, 900) == embedding_for(png(8888))
        with engine_for(url).connect() as conn:
            collations = conn.execute(
                sa.text(
                    "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = :d "
                    "AND TABLE_NAME IN ('product_embeddings', 'clip_embedding_outcomes')"
                ),
                {"d": name},
            ).all()
            stored_url = conn.execute(sa.text("SELECT image_url FROM product_embeddings WHERE product_image_id = 900"))
            assert stored_url.scalar_one().endswith("/商品/写真.png")
        assert len(collations) == 2 and all(c.startswith("utf8mb4") for _, c in collations)
    finally:
        drop_server_database(url)


# -- images no partition covers --------------------------------------------------------------------------------------


def test_images_no_partition_covers_are_counted_with_what_to_do(
    sqlite_url, image_server, fresh_emulator, tmp_path, env
):
    build_sample_shop(engine_for(sqlite_url), image_server, products=6, days=3, today=TODAY)
    insert_image(sqlite_url, 901, 1, "old.png", dt.datetime(2019, 5, 1))  # before PRODUCT_IMAGES_START_DATE
    insert_image(sqlite_url, 902, 1, "future.png", dt.datetime(2099, 1, 1))  # in the future
    insert_image(sqlite_url, 903, 1, "none.png", None, dt.datetime(2025, 1, 16))  # no created_at
    result = materialize_chain(
        make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1]
    )
    check = evaluation(result, "failed_images")
    assert (check.metadata["images_before_start"].value, check.metadata["images_in_the_future"].value) == (1, 1)
    assert check.metadata["images_without_created_at"].value == 1
    assert "move the start date back" in check.metadata["uncovered_images_what_to_do"].value["before_start"]
    status = run(["replicate-assets", "status"], env)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "images created before PRODUCT_IMAGES_START_DATE=2024-01-01: 1" in status.stdout
    assert "set PRODUCT_IMAGES_START_DATE to the day of the first image" in status.stdout
    assert "images created in the future (after tomorrow, UTC): 1" in status.stdout
    assert "images without created_at: 1" in status.stdout


# -- a shop whose columns are named otherwise -----------------------------------------------------------------------


def renamed_shop(url: str, image_server, rename: dict[str, str], drop: str | None = None) -> None:
    build_sample_shop(engine_for(url), image_server, products=6, days=3, today=TODAY)
    with engine_for(url).begin() as conn:
        for old, new in rename.items():
            conn.execute(sa.text(f"ALTER TABLE product_images RENAME COLUMN {old} TO {new}"))
        if drop:
            conn.execute(sa.text(f"ALTER TABLE product_images DROP COLUMN {drop}"))


def test_a_renamed_path_column_is_named_then_configured(sqlite_url, image_server, env):
    renamed_shop(sqlite_url, image_server, {"path": "image_path"})
    refused = run(["replicate-assets", "migrate"], env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: the shop table product_images has no column path (have: id, product_id")
    assert "set SHOP_IMAGE_PATH_COLUMN to it" in refused.stderr
    configured = {**env, "SHOP_IMAGE_PATH_COLUMN": "image_path"}
    assert run(["replicate-assets", "migrate"], configured).returncode == 0
    materialized = run(chain_command(DAYS[0]), configured)
    assert materialized.returncode == 0, materialized.stderr[-2000:]
    with engine_for(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM product_embeddings")).scalar_one() > 0


def test_a_shop_without_updated_at_says_so_in_one_line(sqlite_url, image_server, env):
    renamed_shop(sqlite_url, image_server, {}, drop="updated_at")
    materialize = chain_command(DAYS[0])
    refused = run(materialize, env)
    assert refused.returncode != 0
    assert "the shop table product_images has no column updated_at" in refused.stdout + refused.stderr
    assert "SHOP_IMAGE_UPDATED_AT_COLUMN" in refused.stdout + refused.stderr
    configured = run(materialize, {**env, "SHOP_IMAGE_UPDATED_AT_COLUMN": "created_at"})
    assert configured.returncode == 0, configured.stderr[-2000:]


# -- paths that would inject inputs into clip-features, or be taken for text ---------------------------------------


def test_paths_cannot_inject_inputs_or_pass_for_text(sqlite_url, image_server, fresh_emulator, tmp_path):
    build_sample_shop(engine_for(sqlite_url), image_server, products=4, days=3, today=TODAY)
    image_server.images["inj/upper.png"] = png(61)
    image_server.images["inj/relative.png"] = png(62)
    image_server.images["inj/line.png"] = png(63)
    created = dt.datetime(2025, 1, 16, 9)
    host = image_server.base_url.removeprefix("http://")
    insert_image(sqlite_url, 901, 1, f"HTTP://{host.upper()}/inj/upper.png", created)
    insert_image(sqlite_url, 902, 1, f"//{host}/inj/relative.png", created)
    insert_image(sqlite_url, 903, 1, "inj/line.png\nhttps://evil.example/extra.png", created)
    resources = make_resources(
        sqlite_url, image_server, fresh_emulator, tmp_path, model="andreasjansson/clip-features", batch_size=20
    )
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    assert stored_vector(sqlite_url, 901) == embedding_for(png(61))  # an image, not the text "HTTP://..."
    assert stored_vector(sqlite_url, 902) == embedding_for(png(62))  # protocol-relative: a URL
    row = outcome(sqlite_url, 903)
    assert row.status == "failed" and "control character" in row.error
    sent = {line for request in fresh_emulator.creates() for line in request["inputs"]}
    assert not any("evil.example" in line or "HTTP://" in line for line in sent)


def test_an_image_clip_features_cannot_load_fails_with_what_happened(
    sqlite_url, image_server, fresh_emulator, tmp_path
):
    build_sample_shop(engine_for(sqlite_url), image_server, products=4, days=3, today=TODAY)
    insert_image(sqlite_url, 901, 1, "nowhere/lost.png", dt.datetime(2025, 1, 16, 9))
    resources = make_resources(
        sqlite_url, image_server, fresh_emulator, tmp_path, model="andreasjansson/clip-features", batch_size=20
    )
    assert materialize_chain(resources, first=DAYS[0], last=DAYS[-1]).success
    row = outcome(sqlite_url, 901)
    assert row.status == "failed"
    assert row.error.startswith(f"the model could not load the image {image_server.base_url}/nowhere/lost.png: ")
    assert "cannot identify image file" in row.error and "(model error: '" in row.error  # the raw text, after
