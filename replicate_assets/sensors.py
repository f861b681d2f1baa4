"""Sensors that start the chain on their own: for new or changed images, and for images still missing an embedding.

Both start STOPPED: turning them on spends money. Each launches one range run per contiguous range of days.
"""

import datetime as dt
import json
from collections.abc import Iterable

import dagster as dg

from replicate_assets.assets import SETTINGS, clip_embeddings, embedding_table, product_images
from replicate_assets.catalogue import ShopDatabase, naive_utc, utcnow
from replicate_assets.partitions import daily_partitions
from replicate_assets.replicate import ReplicateClient

CHAIN = dg.AssetSelection.assets(product_images, clip_embeddings, embedding_table)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
ROWS_PER_TICK = 50_000
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def day_ranges(days: Iterable[dt.date]) -> list[tuple[str, str]]:
    """Contiguous runs of days inside the partitions, as (first, last) partition keys."""
    first_key = daily_partitions.get_first_partition_key()
    last_key = daily_partitions.get_last_partition_key()
    keys = sorted(k for k in {d.isoformat() for d in days} if first_key <= k <= last_key)
    ranges: list[tuple[str, str]] = []
    for key in keys:
        if ranges and dt.date.fromisoformat(key) - dt.date.fromisoformat(ranges[-1][1]) == dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


def range_request(first: str, last: str, run_key: str | None, reason: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, tags={RANGE_START: first, RANGE_END: last, "replicate_assets/reason": reason})


def partitions_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys that a queued or running run already covers."""
    keys: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        tags = run.tags
        if "dagster/partition" in tags:
            keys.add(tags["dagster/partition"])
        elif RANGE_START in tags and RANGE_END in tags:
            window = dg.PartitionKeyRange(tags[RANGE_START], tags[RANGE_END])
            keys.update(daily_partitions.get_partition_keys_in_range(window))
    return keys


@dg.sensor(
    target=CHAIN,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Embeds new and changed product images: follows product_images by (updated_at, id) and runs the "
    "chain over the days they fall in. Its first tick covers the whole catalogue (embedded images cost nothing).",
)
def new_product_images_sensor(context: dg.SensorEvaluationContext, shop: ShopDatabase) -> dg.SensorResult:
    after = None
    if context.cursor:
        saved = json.loads(context.cursor)
        after = (dt.datetime.fromisoformat(saved["updated_at"]), saved["id"])
    rows = shop.catalogue().changed_images(after, ROWS_PER_TICK)
    if not rows:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new or changed product images"))
    last = rows[-1]
    cursor = json.dumps({"updated_at": naive_utc(last.updated_at).isoformat(), "id": last.id})
    ranges = day_ranges(naive_utc(row.created_at).date() for row in rows if row.created_at is not None)
    context.log.info(f"{len(rows)} new or changed images in {len(ranges)} range(s) of days")
    requests = [range_request(a, b, run_key=f"new-images:{cursor}:{a}...{b}", reason="new images") for a, b in ranges]
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(
    target=CHAIN,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Every 5 minutes, runs the chain over the days whose images still lack an embedding (old imports, "
    "failed runs, retries that are due), never twice while a run for them is in flight.",
)
def missing_embeddings_sensor(
    context: dg.SensorEvaluationContext, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.SensorResult:
    days = shop.catalogue().days_needing_work(
        replicate.spec.reference, SETTINGS.max_attempts, SETTINGS.retry_delay_seconds, utcnow()
    )
    busy = partitions_in_flight(context.instance)
    todo = {day for day in days if day.isoformat() not in busy}
    if not todo:
        reason = "every image has its embedding" if not days else f"{len(days)} day(s) with work are in flight"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason))
    ranges = day_ranges(todo)
    context.log.info(f"{len(todo)} day(s) with images missing embeddings, in {len(ranges)} range(s)")
    return dg.SensorResult(run_requests=[range_request(a, b, None, "missing embeddings") for a, b in ranges])
