"""Sensors that start the chain on their own: for new or changed images, and for images still missing an embedding.

Both start STOPPED: turning them on spends money. Each requests a backfill of the chain over the days with work:
it shows under the UI's backfills (per-partition status, cancel, re-execute failed) and, the assets' backfill
policy being `single_run`, runs as one run per contiguous range of days.

`RunRequest.for_asset_graph_subset` and `AssetGraphSubset` are not public Dagster API (Dagster is pinned exactly,
and the daemon tick test in test_ui.py covers them). A backfill request has no run key, so each sensor guards
against asking twice: the new-images sensor by its cursor, the missing-embeddings one by the partitions that
queued or running runs and requested backfills already cover.
"""

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import BulkActionStatus

from replicate_assets.chain import CHAIN_KEYS, day_ranges
from replicate_assets.db import Changes, utcnow
from replicate_assets.defs.embeddings.assets import CHAIN
from replicate_assets.defs.embeddings.checks import UNCOVERED_FIX, uncovered_images
from replicate_assets.defs.resources import EmbeddingPolicy, ReplicateResource, ShopDatabase

Row = tuple[int, dt.datetime | None, dt.datetime]  # an image's id, created_at, updated_at
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
ROWS_PER_TICK = 50_000
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclasses.dataclass
class ImagesCursor:
    """Where new_product_images_sensor is in product_images: the last (updated_at, id) it passed, never later than
    the database's now, and the images dated in the future it already took (id -> updated_at), so they are not
    taken again on every tick, but are when they change."""

    after: tuple[dt.datetime, int] | None = None
    future: dict[int, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None) -> "ImagesCursor":
        if not text:
            return cls()
        saved = json.loads(text)
        after = (dt.datetime.fromisoformat(saved["updated_at"]), saved["id"]) if saved.get("updated_at") else None
        return cls(after, {int(k): v for k, v in saved.get("future", {}).items()})

    def dump(self) -> str:
        stamp, last_id = self.after if self.after else (None, None)
        return json.dumps({"updated_at": stamp.isoformat() if stamp else None, "id": last_id, "future": self.future})

    def advance(self, rows: list[Row], now: dt.datetime) -> tuple[list[Row], list[Row]]:
        """Move past `rows` (oldest first), but never past `now`: returns (rows to take, rows dated after now)."""
        todo = [row for row in rows if self.future.get(row[0]) != row[2].isoformat()]
        future = [row for row in rows if row[2] > now]
        present = [row for row in rows if row[2] <= now]
        if present:
            self.after = (present[-1][2], present[-1][0])
        passed = self.after[0] if self.after else None
        self.future = {
            image: stamp
            for image, stamp in self.future.items()
            if passed is None or dt.datetime.fromisoformat(stamp) > passed
        }
        self.future.update({row[0]: row[2].isoformat() for row in future})
        return todo, [row for row in future if row in todo]


def partition_ranges(days: Iterable[dt.date], partitions: dg.TimeWindowPartitionsDefinition) -> list[tuple[str, str]]:
    """Contiguous runs of days inside the partitions, as (first, last) partition keys."""
    first_key, last_key = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    if first_key is None or last_key is None:
        return []
    return day_ranges(days, dt.date.fromisoformat(first_key), dt.date.fromisoformat(last_key))


def _inside(day: dt.date, partitions: dg.TimeWindowPartitionsDefinition) -> bool:
    first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    return bool(first and last) and first <= day.isoformat() <= last


def range_tags(first: str, last: str) -> dict[str, str]:
    """The tags of one run over the partitions first...last (the assets' single-run backfill policy)."""
    return {RANGE_START: first, RANGE_END: last}


def backfill_request(
    ranges: list[tuple[str, str]], partitions: dg.TimeWindowPartitionsDefinition, reason: str
) -> dg.RunRequest:
    """A backfill of the whole chain over `ranges` of days (the daemon launches it, one run per range)."""
    keys = [k for a, b in ranges for k in partitions.get_partition_keys_in_range(dg.PartitionKeyRange(a, b))]
    subset = AssetGraphSubset(
        partitions_subsets_by_asset_key={
            dg.AssetKey(name): partitions.empty_subset().with_partition_keys(keys) for name in CHAIN_KEYS
        },
        non_partitioned_asset_keys=set(),
    )
    return dg.RunRequest.for_asset_graph_subset(subset, tags={"replicate_assets/reason": reason})


def partitions_in_flight(context: dg.SensorEvaluationContext, partitions: dg.PartitionsDefinition) -> set[str]:
    """Partition keys that a queued or running run, or a backfill not yet done, already covers."""
    keys: set[str] = set()
    for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        tags = run.tags
        if "dagster/partition" in tags:
            keys.add(tags["dagster/partition"])
        elif RANGE_START in tags and RANGE_END in tags:
            window = dg.PartitionKeyRange(tags[RANGE_START], tags[RANGE_END])
            keys.update(partitions.get_partition_keys_in_range(window))
    repository = context.repository_def
    if repository is None:
        return keys
    for backfill in context.instance.get_backfills(status=BulkActionStatus.REQUESTED):
        if not backfill.is_asset_backfill:
            continue
        try:
            target = backfill.get_asset_backfill_data(repository.asset_graph).target_subset
        except Exception:  # a backfill of assets this code no longer defines covers none of ours
            continue
        subset = target.partitions_subsets_by_asset_key.get(dg.AssetKey(CHAIN_KEYS[0]))
        keys.update(subset.get_partition_keys() if subset is not None else ())
    return keys


def build_sensors(partitions: dg.TimeWindowPartitionsDefinition, interval: int = 60) -> list[dg.SensorDefinition]:
    """The two sensors over `partitions`: new images every `interval` seconds, missing embeddings every 5x."""

    @dg.sensor(
        asset_selection=CHAIN,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Embeds new and changed product images: follows product_images by (updated_at, id) and runs "
        "the chain over the days they fall in. Its first tick covers the whole catalogue (embedded images cost "
        "nothing).",
    )
    def new_product_images_sensor(context: dg.SensorEvaluationContext, shop: ShopDatabase) -> dg.SensorResult:
        changes = Changes(shop.schema())
        cursor = ImagesCursor.load(context.cursor)
        now = changes.now()
        rows = changes.changed_images(cursor.after, ROWS_PER_TICK)
        todo, future = cursor.advance(rows, now)
        if future:
            latest = max(updated for _, _, updated in future)
            context.log.warning(
                f"{len(future)} product images are dated in the future (latest updated_at {latest.isoformat(' ')} "
                f"UTC, the database's clock says {now.isoformat(' ')}): they are embedded now and again when they "
                "change; check the shop's clock and time zone (Laravel's APP_TIMEZONE and the database server's "
                "time zone should both be UTC)"
            )
        if not todo:
            return dg.SensorResult(skip_reason=dg.SkipReason("no new or changed product images"), cursor=cursor.dump())
        days = [created.date() if created else None for _, created, _ in todo]
        ranges = partition_ranges((day for day in days if day), partitions)
        outside = sum(1 for day in days if day is None or not _inside(day, partitions))
        if outside:
            context.log.warning(
                f"{outside} new or changed images fall on no partition (before PRODUCT_IMAGES_START_DATE, in the "
                "future, or without created_at): `replicate-assets status` says which, and what to do"
            )
        context.log.info(f"{len(todo)} new or changed images in {len(ranges)} range(s) of days")
        requests = [backfill_request(ranges, partitions, "new images")] if ranges else []
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())

    @dg.sensor(
        asset_selection=CHAIN,
        minimum_interval_seconds=interval * 5,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Every 5 ticks of SENSOR_INTERVAL_SECONDS (5 minutes by default), runs the chain over the days "
        "whose images still lack an embedding (old "
        "imports, failed runs, retries that are due), never twice while a run for them is in flight.",
    )
    def missing_embeddings_sensor(
        context: dg.SensorEvaluationContext, shop: ShopDatabase, replicate: ReplicateResource, policy: EmbeddingPolicy
    ) -> dg.SensorResult:
        reports = Changes(shop.schema())
        days = reports.days_needing_work(
            replicate.spec.reference, policy.max_attempts, policy.retry_delay_seconds, utcnow()
        )
        for kind, count in uncovered_images(reports, partitions).items():
            if count:
                context.log.warning(f"{count} images no partition covers: {UNCOVERED_FIX[kind]}")
        busy = partitions_in_flight(context, partitions)
        todo = {day for day in days if day.isoformat() not in busy}
        if not todo:
            reason = "every image has its embedding" if not days else f"{len(days)} day(s) with work are in flight"
            return dg.SensorResult(skip_reason=dg.SkipReason(reason))
        ranges = partition_ranges(todo, partitions)
        context.log.info(f"{len(todo)} day(s) with images missing embeddings, in {len(ranges)} range(s)")
        return dg.SensorResult(run_requests=[backfill_request(ranges, partitions, "missing embeddings")])

    return [new_product_images_sensor, missing_embeddings_sensor]
