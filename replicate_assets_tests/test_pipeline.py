"""The chain product_images -> clip_embeddings -> embedding_table through real Dagster runs, on every backend."""

import datetime as dt
import re

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import DAYS, TOKEN, definitions, make_resources, materialize_chain

from replicate_assets.chain import CHAIN_KEYS
from replicate_assets.db import Reports, connect, engine_for
from replicate_assets.defs.resources import ReplicateResource
from replicate_assets.testing.emulator import embedding_for


def check_evaluation(result, name):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def embeddings_by_image(url: str) -> dict[int, sa.Row]:
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM product_embeddings")).all()
    return {row.product_image_id: row for row in rows}


def image_rows(url: str) -> list[sa.Row]:
    with engine_for(url).connect() as conn:
        return conn.execute(sa.text("SELECT id, product_id, path, created_at FROM product_images")).all()


def image_url(url: str, image_id: int, image_server) -> str | None:
    with engine_for(url).connect() as conn:
        path = conn.execute(sa.text("SELECT path FROM product_images WHERE id = :id"), {"id": image_id}).scalar()
    if not path or path.startswith("ftp"):
        return None
    return path if path.startswith("http") else f"{image_server.base_url}/{path}"


def image_bytes(path, image_server):
    if not path:
        return None
    key = path.removeprefix(image_server.base_url + "/").split("?")[0]
    return image_server.images.get(key)


def test_range_run_embeds_every_good_image_exactly(shop_url, shop, resources, image_server, fresh_emulator):
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    assert result.success

    stored = embeddings_by_image(shop_url)
    images = image_rows(shop_url)
    good = [row for row in images if row.id not in shop.broken]
    assert set(stored) == {row.id for row in good}
    for row in good:
        expected = embedding_for(image_bytes(row.path, image_server))
        embedding = stored[row.id].embedding
        embedding = embedding if isinstance(embedding, list) else __import__("json").loads(embedding)
        assert embedding == expected, f"ProductImage #{row.id}"
        assert stored[row.id].product_id == row.product_id
        assert stored[row.id].model == "openai/clip"
        assert stored[row.id].dimensions == 768

    failed = {row.product_image_id: row.error for row in Reports(connect(shop_url)).failed_images()}
    assert set(failed) == set(shop.broken)
    assert all(reason for reason in failed.values())
    # The same URL under three images is paid for once.
    creates = fresh_emulator.creates_per_input()
    assert max(creates.values()) == 1
    assert sum(creates.values()) == len({row.path for row in good}) + sum(
        1 for why in shop.broken.values() if "404" in why
    )


def test_metadata_counts_the_window(shop_url, shop, resources):
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    clip = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    table = result.asset_materializations_for_node("embedding_table")[0].metadata
    images = image_rows(shop_url)
    assert clip["images_in_window"].value == len(images)
    assert clip["images_failed"].value == len(shop.broken)
    assert clip["images_indexed"].value == len(images) - len(shop.broken)
    assert clip["images_pending"].value == 0
    assert clip["embeddings_reused"].value == 2  # the two images sharing a URL
    dead_urls = sum(1 for why in shop.broken.values() if "404" in why)  # sent, and failed by the model
    assert clip["predictions_created"].value == clip["images_embedded"].value - 2 + dead_urls
    assert clip["replicate_seconds_billed"].value == pytest.approx(0.0152 * clip["predictions_created"].value)
    assert clip["estimated_cost_usd"].value == pytest.approx(
        clip["replicate_seconds_billed"].value * 0.000975, rel=1e-3
    )
    assert clip["images_per_second"].value > 0
    assert table["rows_upserted"].value == len(images) - len(shop.broken)
    assert table["products_with_embeddings"].value == len({r.product_id for r in images if r.id not in shop.broken})


def test_rerun_pays_nothing_twice_and_duplicates_nothing(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=dt.date(2025, 1, 17))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    before = embeddings_by_image(sqlite_url)
    creates_before = len(fresh_emulator.creates())

    fresh_emulator.requests.clear()
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    assert result.success
    # Only the dead URLs are tried again (attempt 2 of 3); nothing that succeeded is sent twice.
    dead = {url for url in (image_url(sqlite_url, i, image_server) for i in shop.broken) if url}
    assert set(fresh_emulator.creates_per_input()) == {u for u in dead if u.startswith("http")}
    assert creates_before > len(fresh_emulator.creates())
    after = embeddings_by_image(sqlite_url)
    assert after.keys() == before.keys()
    assert {k: r.id for k, r in after.items()} == {k: r.id for k, r in before.items()}


def test_single_partition_touches_only_its_day(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=dt.date(2025, 1, 17))
    result = materialize_chain(make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), partition=DAYS[1])
    assert result.success
    stored = embeddings_by_image(sqlite_url)
    on_day = {r.id for r in image_rows(sqlite_url) if str(r.created_at).startswith(DAYS[1])}
    assert stored.keys() == on_day - set(shop.broken)
    assert stored  # the day has images


def test_changed_image_is_embedded_again_in_place(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop, png

    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=dt.date(2025, 1, 17))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    before = embeddings_by_image(sqlite_url)
    image_server.images["replaced/1.png"] = png(99_999)
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(
            sa.text("UPDATE product_images SET path = 'replaced/1.png', updated_at = :now WHERE id = 1"),
            {"now": dt.datetime(2025, 2, 1)},
        )
    fresh_emulator.requests.clear()

    materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    after = embeddings_by_image(sqlite_url)
    sent = fresh_emulator.creates_per_input()
    assert sent.pop(f"{image_server.base_url}/replaced/1.png") == 1
    assert all("404" in shop.broken[i] for i in shop.broken if image_url(sqlite_url, i, image_server) in sent)
    assert len(sent) == sum(1 for why in shop.broken.values() if "404" in why)  # only failures are retried
    assert after[1].id == before[1].id  # updated in place, not duplicated
    assert after[1].image_url.endswith("/replaced/1.png")
    stored = after[1].embedding
    assert (stored if isinstance(stored, list) else __import__("json").loads(stored)) == embedding_for(png(99_999))
    assert len(after) == len(before)


def test_clip_embeddings_alone_says_what_to_run(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    defs = definitions()

    build_sample_shop(engine_for(sqlite_url), image_server, products=5, days=3, today=dt.date(2025, 1, 17))
    result = materialize_chain(
        make_resources(sqlite_url, image_server, fresh_emulator, tmp_path),
        partition=DAYS[0],
        selection=[defs.get_assets_def("clip_embeddings")],
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("clip_embeddings")
    message = failure.user_failure_data.description
    assert "product_images has not been materialized" in message
    assert f"--select product_images,clip_embeddings,embedding_table --partition {DAYS[0]}" in message
    assert fresh_emulator.creates() == []


def test_product_images_then_clip_embeddings_in_separate_runs(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    defs = definitions()

    build_sample_shop(engine_for(sqlite_url), image_server, products=10, days=3, today=dt.date(2025, 1, 17))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    for name in ("product_images", "clip_embeddings", "embedding_table"):
        result = materialize_chain(
            resources, partition=DAYS[0], instance=instance, selection=[defs.get_assets_def(name)]
        )
        assert result.success, name
    assert embeddings_by_image(sqlite_url)


def test_products_without_embeddings_check_fails_then_passes(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=dt.date(2025, 1, 17))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    evaluation = check_evaluation(result, "products_without_embeddings")
    images = image_rows(sqlite_url)
    good_products = {r.product_id for r in images if r.id not in shop.broken}
    lost = sorted({r.product_id for r in images if r.id in shop.broken} - good_products)
    assert lost, "the sample shop has a product whose only image is broken"
    assert not evaluation.passed
    assert evaluation.metadata["products_without_embeddings"].value == len(lost)
    assert evaluation.metadata["first_product_ids"].value == lost[:20]
    assert evaluation.metadata["products_without_images"].value == shop.products_without_images
    # Every image of those products failed for a logged reason: a warning with the reasons, not a red ERROR.
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "failed for a logged reason" in evaluation.description
    assert evaluation.metadata["products_unexplained"].value == 0

    # A product whose image nobody has looked at yet (never seen by product_images): a gap nothing explains.
    with engine_for(sqlite_url).begin() as conn:
        stamp = dt.datetime(2025, 1, 16, 12)
        conn.execute(
            sa.text("INSERT INTO products (id, name, created_at, updated_at) VALUES (800, 'x', :t, :t)"), {"t": stamp}
        )
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (800, 800, 'a.png', :t, :t)"
            ),
            {"t": stamp},
        )
    defs = definitions()
    table = [
        defs.get_assets_def("embedding_table"),
        *[c for c in defs.asset_checks if any(k.asset_key.path == ["embedding_table"] for k in c.check_keys)],
    ]
    unseen = check_evaluation(
        materialize_chain(resources, first=DAYS[0], last=DAYS[-1], selection=table), "products_without_embeddings"
    )
    assert unseen.severity == dg.AssetCheckSeverity.ERROR and "no failure says why" in unseen.description
    assert unseen.metadata["products_unexplained"].value == 1
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM product_images WHERE id = 800"))
        conn.execute(sa.text("DELETE FROM products WHERE id = 800"))

    # Fix the broken images: the next run embeds them and the check passes.
    for image_id in shop.broken:
        image_server.images[f"fixed/{image_id}.png"] = image_server.images["products/1/0.png"][:-1] + bytes([image_id])
    with engine_for(sqlite_url).begin() as conn:
        for image_id in shop.broken:
            conn.execute(
                sa.text("UPDATE product_images SET path = :p, updated_at = :now WHERE id = :id"),
                {"p": f"fixed/{image_id}.png", "now": dt.datetime(2025, 2, 1), "id": image_id},
            )
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    evaluation = check_evaluation(result, "products_without_embeddings")
    assert evaluation.passed
    assert evaluation.metadata["products_without_embeddings"].value == 0


LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (Indexed ProductImage #(\d+) for Product #(\d+)|"
    r"Failed ProductImage #(\d+) - error: .+)$"
)


def test_progress_log_has_the_laravel_format(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=30, days=3, today=dt.date(2025, 1, 17))
    materialize_chain(make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1])
    lines = (tmp_path / "logs" / "replicate_embeddings.log").read_text().splitlines()
    assert lines and all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)]
    indexed = {int(m.group(2)): int(m.group(3)) for m in map(LINE.match, lines) if m.group(2)}
    failed = {int(m.group(4)) for m in map(LINE.match, lines) if m.group(4)}
    images = {r.id: r.product_id for r in image_rows(sqlite_url)}
    assert indexed == {i: p for i, p in images.items() if i not in shop.broken}
    # Every failure has its line: dead URLs from clip_embeddings, unusable paths from product_images.
    assert failed == set(shop.broken)
    assert not any("s3cr3t" in line for line in lines), "query strings of signed URLs are not logged"


def test_bad_token_stops_the_run_with_a_clear_message(sqlite_url, image_server, fresh_emulator, tmp_path):
    from replicate_assets.testing.sample_shop import build_sample_shop

    build_sample_shop(engine_for(sqlite_url), image_server, products=5, days=3, today=dt.date(2025, 1, 17))
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    resources["replicate"] = ReplicateResource(api_token="r8_wrong_token", base_url=fresh_emulator.base_url)
    result = materialize_chain(resources, first=DAYS[0], last=DAYS[-1], raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("clip_embeddings").user_failure_data.description
    assert "REPLICATE_API_TOKEN" in message and "401" in message
    assert "r8_wrong_token" not in message and TOKEN not in message
    assert embeddings_by_image(sqlite_url) == {}


@pytest.mark.parametrize("shop_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "resource, config", [("policy", {"chunk_size": 0}), ("replicate", {"max_in_flight": 0, "api_token": TOKEN})]
)
def test_a_run_config_outside_the_bounds_stops_the_run_before_any_work(
    shop, resources, fresh_emulator, shop_url, resource, config
):
    """A zero (or an absurd number) in a run's config is refused when the run starts: the run fails naming the
    field, and nothing was sent or stored (it never 'succeeds having done nothing')."""
    defs = definitions()
    assets = [defs.get_assets_def(key) for key in CHAIN_KEYS]
    result = dg.materialize(
        assets,
        resources=resources,
        partition_key=DAYS[0],
        run_config={"resources": {resource: {"config": config}}},
        raise_on_error=False,
    )
    assert not result.success
    assert "greater than or equal to 1" in str([e.event_specific_data for e in result.all_events]), config
    assert fresh_emulator.creates() == []
    with engine_for(shop_url).connect() as conn:
        assert "clip_embedding_outcomes" not in sa.inspect(conn).get_table_names()  # not even a table was made
