"""The two sensors, evaluated with build_sensor_context against a real shop database and instance."""

import datetime as dt
import json
import time

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import DAYS, TODAY, TOKEN, definitions, make_resources, materialize_chain
from dagster._core.test_utils import create_run_for_test

from replicate_assets.chain import CHAIN_KEYS, day_ranges
from replicate_assets.db import Changes, connect, engine_for
from replicate_assets.defs.resources import EmbeddingPolicy, ReplicateResource, ShopDatabase
from replicate_assets.testing.sample_shop import build_sample_shop, png


def sensor(name: str) -> dg.SensorDefinition:
    return next(s for s in definitions().sensors if s.name == name)


@pytest.fixture
def shop(sqlite_url, image_server):
    return build_sample_shop(engine_for(sqlite_url), image_server, products=20, days=3, today=TODAY)


def tick_new(url, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources={"shop": ShopDatabase(url=url)})
    return sensor("new_product_images_sensor")(context)


def tick_missing(url, instance, emulator, retry_delay_seconds=1):
    resources = {
        "shop": ShopDatabase(url=url),
        "replicate": ReplicateResource(api_token=TOKEN, base_url=emulator.base_url),
        "policy": EmbeddingPolicy(retry_delay_seconds=retry_delay_seconds),
    }
    return sensor("missing_embeddings_sensor")(dg.build_sensor_context(instance=instance, resources=resources))


def ranges(result):
    """The ranges of days the sensor's backfill request covers, for every asset of the chain alike."""
    found = set()
    for request in result.run_requests:
        subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
        assert {key.to_user_string() for key in subsets} == set(CHAIN_KEYS)  # the whole chain
        found |= {tuple(sorted(subset.get_partition_keys())) for subset in subsets.values()}
    assert len(found) <= 1
    days = [dt.date.fromisoformat(key) for keys in found for key in keys]
    return day_ranges(days)


def add_image(url, image_id, created, updated, path="products/1/0.png"):
    with engine_for(url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO product_images (id, product_id, path, created_at, updated_at) "
                "VALUES (:id, 1, :path, :c, :u)"
            ),
            {"id": image_id, "path": path, "c": created, "u": updated},
        )


def test_new_images_sensor_follows_the_cursor_without_missing_or_repeating(sqlite_url, shop):
    first = tick_new(sqlite_url)
    assert ranges(first) == [(DAYS[0], DAYS[-1])]  # the whole catalogue, one range run
    assert tick_new(sqlite_url, first.cursor).skip_reason is not None  # nothing new: nothing launched
    assert len(first.run_requests) == 1  # one backfill: the UI lists it with per-partition status

    # A row that arrives after the tick with the same updated_at as the cursor's row is not missed.
    last = json.loads(first.cursor)
    add_image(sqlite_url, 1000, dt.datetime(2025, 3, 1, 8), dt.datetime.fromisoformat(last["updated_at"]))
    # A changed old row and a new row two days apart: two ranges, exactly those days.
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(sa.text("UPDATE product_images SET updated_at = :u WHERE id = 1"), {"u": dt.datetime(2026, 1, 1)})
    add_image(sqlite_url, 1001, dt.datetime(2025, 3, 3, 8), dt.datetime(2026, 1, 1))
    second = tick_new(sqlite_url, first.cursor)
    day_of_image_1 = str(
        engine_for(sqlite_url).connect().execute(sa.text("SELECT created_at FROM product_images WHERE id = 1")).scalar()
    )[:10]
    assert sorted(ranges(second)) == sorted(
        [(day_of_image_1, day_of_image_1), ("2025-03-01", "2025-03-01"), ("2025-03-03", "2025-03-03")]
    )
    assert json.loads(second.cursor) == {"updated_at": "2026-01-01T00:00:00", "id": 1001, "future": {}}
    assert tick_new(sqlite_url, second.cursor).skip_reason is not None


def test_images_outside_the_partitions_are_not_requested(sqlite_url, shop):
    cursor = tick_new(sqlite_url).cursor
    add_image(sqlite_url, 1000, dt.datetime(2019, 1, 1), dt.datetime(2026, 1, 1))  # before PRODUCT_IMAGES_START_DATE
    result = tick_new(sqlite_url, cursor)
    assert result.run_requests == [] and json.loads(result.cursor)["id"] == 1000


def test_missing_embeddings_sensor_finds_exactly_the_days_with_work(
    sqlite_url, shop, image_server, fresh_emulator, tmp_path
):
    # A retry delay of 60 s until the test says otherwise: with the tests' 1 s, a slow machine sees the dead URL's
    # retry come due before the first checks.
    instance = dg.DagsterInstance.ephemeral()
    assert ranges(tick_missing(sqlite_url, instance, fresh_emulator, 60)) == [(DAYS[0], DAYS[-1])]
    materialize_chain(make_resources(sqlite_url, image_server, fresh_emulator, tmp_path), first=DAYS[0], last=DAYS[-1])

    # Right after the run, only the dead URLs' retry is pending, and it is not due yet.
    reports = Changes(connect(sqlite_url))
    failed_at = max(row.updated_at for row in reports.failed_images())
    assert reports.days_needing_work("openai/clip", 3, 60, failed_at) == set()
    # An old import with no embedding, on a day of its own.
    image_server.images["old/1.png"] = png(4242)
    add_image(sqlite_url, 1000, dt.datetime(2024, 6, 1, 12), dt.datetime(2024, 6, 1, 12), path="old/1.png")
    result = tick_missing(sqlite_url, instance, fresh_emulator, 60)
    assert ranges(result) == [("2024-06-01", "2024-06-01")]

    # The dead URL's retry becomes due (delay 1 s in tests, x 2^(attempts-1)).
    time.sleep(2.1)
    dead_days = {d.isoformat() for d in reports.days_needing_work("openai/clip", 3, 1, dt.datetime(2100, 1, 1))}
    assert set(sum(ranges(tick_missing(sqlite_url, instance, fresh_emulator)), ())) == dead_days


def test_missing_embeddings_sensor_waits_for_runs_in_flight(sqlite_url, shop, fresh_emulator):
    instance = dg.DagsterInstance.ephemeral()
    create_run_for_test(
        instance,
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]},
    )
    assert ranges(tick_missing(sqlite_url, instance, fresh_emulator)) == [(DAYS[2], DAYS[2])]
    create_run_for_test(instance, status=dg.DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": DAYS[2]})
    assert tick_missing(sqlite_url, instance, fresh_emulator).skip_reason is not None


def test_permanent_failures_are_not_retried_until_their_row_changes(sqlite_url, image_server, fresh_emulator, tmp_path):
    shop = build_sample_shop(engine_for(sqlite_url), image_server, products=20, days=3, today=TODAY)
    resources = make_resources(sqlite_url, image_server, fresh_emulator, tmp_path)
    for _ in range(3):  # three attempts for the dead URL
        time.sleep(1.1)
        materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    reports = Changes(connect(sqlite_url))
    dead = [i for i, why in shop.broken.items() if "404" in why]
    assert {r.product_image_id: r.attempts for r in reports.failed_images() if r.product_image_id in dead} == {
        i: 3 for i in dead
    }
    far_future = dt.datetime(2100, 1, 1)
    assert reports.days_needing_work("openai/clip", 3, 1, far_future) == set()
    fresh_emulator.requests.clear()
    materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    assert fresh_emulator.creates() == []  # given up: not sent again

    with engine_for(sqlite_url).begin() as conn:  # the shop fixes the row
        conn.execute(
            sa.text("UPDATE product_images SET path = 'products/1/0.png', updated_at = :u WHERE id = :id"),
            {"u": dt.datetime(2026, 1, 1), "id": dead[0]},
        )
    assert reports.days_needing_work("openai/clip", 3, 1, far_future)
    materialize_chain(resources, first=DAYS[0], last=DAYS[-1])
    assert {r.product_image_id for r in reports.failed_images()}.isdisjoint({dead[0]})


def test_no_clock_can_blind_the_new_images_sensor(sqlite_url, shop, capfd):
    """A row dated 12 h ahead (another server's clock, local time written as UTC) is embedded when seen, is not
    taken again on every tick, is taken again when it changes, and hides no image added after it."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    first = tick_new(sqlite_url)
    ahead = now + dt.timedelta(hours=12)
    add_image(sqlite_url, 2000, dt.datetime(2025, 1, 16, 9), ahead)
    seen = tick_new(sqlite_url, first.cursor)
    logged = capfd.readouterr().err
    assert ranges(seen) == [("2025-01-16", "2025-01-16")]  # processed when seen
    cursor = json.loads(seen.cursor)
    assert dt.datetime.fromisoformat(cursor["updated_at"]) <= now  # never past now
    assert "1 product images are dated in the future" in logged and "time zone" in logged
    quiet = tick_new(sqlite_url, seen.cursor)
    assert quiet.skip_reason is not None  # not again on every tick

    add_image(sqlite_url, 2001, dt.datetime(2025, 1, 17, 9), now)  # an image added after it
    later = tick_new(sqlite_url, quiet.cursor)
    assert ranges(later) == [("2025-01-17", "2025-01-17")]
    with engine_for(sqlite_url).begin() as conn:  # the future row changes (still in the future)
        conn.execute(
            sa.text("UPDATE product_images SET updated_at = :u WHERE id = 2000"), {"u": ahead + dt.timedelta(hours=1)}
        )
    changed = tick_new(sqlite_url, later.cursor)
    assert ranges(changed) == [("2025-01-16", "2025-01-16")]
    assert tick_new(sqlite_url, changed.cursor).skip_reason is not None


def test_a_cursor_of_the_previous_release_is_read():
    from replicate_assets.defs.embeddings.sensors import ImagesCursor

    old = ImagesCursor.load(json.dumps({"updated_at": "2025-01-17T10:00:00", "id": 10}))
    assert old.after == (dt.datetime(2025, 1, 17, 10), 10) and old.future == {}
