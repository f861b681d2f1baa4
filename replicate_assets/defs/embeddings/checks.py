"""Asset checks: what the Laravel version's monitoring queries showed, evaluated after every run."""

import datetime as dt
from collections import Counter

import dagster as dg

from replicate_assets.db import OutcomeStore, Reports, Window
from replicate_assets.db.embeddings import EmbeddingStore
from replicate_assets.defs.embeddings.assets import window_of
from replicate_assets.defs.resources import EmbeddingPolicy, ReplicateResource, ShopDatabase
from replicate_assets.replicate import DIMENSIONS, vector_problem

FIRST_IDS = 20


def checked_window(context: dg.AssetCheckExecutionContext) -> tuple[Window, str]:
    """The run's partition window, or all time when the check runs outside a partitioned run."""
    if context.has_partition_key or context.has_partition_key_range:
        keys = context.partition_keys
        label = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        return window_of(context), label
    return Window(), "all"


@dg.asset_check(
    asset="embedding_table",
    description="Products that have images in the checked window but no embedding from the configured model "
    "(the Laravel version's LEFT JOIN query), per partition; orphan images (no such product) are counted apart. "
    "ERROR for a gap nothing explains (images pending or never seen); WARN when every image of those products "
    "failed for a known, logged reason (a dead URL, an image the model cannot read): see `replicate-assets failed`.",
)
def products_without_embeddings(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateResource
) -> dg.AssetCheckResult:
    reports = Reports(shop.schema())
    window, label = checked_window(context)
    missing = reports.products_without_embeddings(window, replicate.spec.reference)
    per_partition = Counter(day.isoformat() for days in missing.values() for day in days)
    orphans, first_orphans = reports.orphans(window)
    explained = reports.failed_products(list(missing), window, replicate.spec.reference)
    unexplained = [p for p in missing if p not in explained]
    reasons = Counter(why for whys in explained.values() for why in whys).most_common(5)
    if unexplained:
        description = f"{len(unexplained)} products with images in {label} have no embedding and no failure says why"
    elif explained:
        description = (
            f"{len(explained)} products with images in {label} have no embedding: each of their images failed for "
            f"a logged reason ({'; '.join(why for why, _ in reasons[:2])}); `replicate-assets failed` lists them"
        )
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR if unexplained else dg.AssetCheckSeverity.WARN,
        description=description if missing else None,
        metadata={
            "products_without_embeddings": len(missing),
            "products_with_failures_explained": len(explained),
            "products_unexplained": len(unexplained),
            "failure_reasons": dg.MetadataValue.json(dict(reasons)),
            "first_product_ids": dg.MetadataValue.json(list(missing)[:FIRST_IDS]),
            "per_partition": dg.MetadataValue.json(dict(sorted(per_partition.items()))),
            "products_without_images": reports.products_without_images(),
            "orphan_images": orphans,
            "first_orphan_image_ids": dg.MetadataValue.json(first_orphans),
            "window": label,
        },
    )


@dg.asset_check(
    asset="clip_embeddings",
    blocking=True,
    description="Every embedding about to reach product_embeddings has the model's 768 dimensions, finite values "
    "and a non-zero norm; bad ones are marked failed, and the check blocks embedding_table.",
)
def embedding_dimensions(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateResource
) -> dg.AssetCheckResult:
    schema = shop.schema()
    window, label = checked_window(context)
    model = replicate.spec.reference
    checked, bad = 0, {}
    for page in EmbeddingStore(schema).unpublished(window, model, 1000):
        checked += len(page)
        for row in page:
            problem = vector_problem(row.embedding, DIMENSIONS)
            if problem:
                bad[row.product_image_id] = problem
    if bad:
        reason = "rejected by the embedding_dimensions check: " + next(iter(bad.values()))
        OutcomeStore(schema).quarantine(list(bad), model, reason)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(bad)} of {checked} new embeddings in {label} are unusable" if bad else None,
        metadata={
            "embeddings_checked": checked,
            "embeddings_rejected": len(bad),
            "first_rejected_image_ids": dg.MetadataValue.json(list(bad)[:FIRST_IDS]),
            "dimensions": DIMENSIONS,
        },
    )


def uncovered_images(reports: Reports, partitions: dg.TimeWindowPartitionsDefinition) -> dict[str, int]:
    """Images no partition covers (before the first day, after the last, no created_at), by kind."""
    first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    if first is None or last is None:
        return {}
    return reports.uncovered(dt.date.fromisoformat(first), dt.date.fromisoformat(last))


UNCOVERED_FIX = {
    "before_start": "created before PRODUCT_IMAGES_START_DATE: move the start date back to cover them",
    "in_the_future": "created_at after today: fix the rows (they are embedded when their day comes)",
    "without_created_at": "created_at is NULL: set it on those rows",
}


def build_checks(partitions: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The three checks; `failed_images` also counts the images `partitions` does not cover."""

    @dg.asset_check(
        asset="clip_embeddings",
        description="Images that failed for good (attempts used up, or a path that cannot be sent), with the "
        "reasons and their counts, and images no daily partition covers (with what to do). Failed images are "
        "tried again when their product_images row changes, or after `replicate-assets retry-failed`.",
    )
    def failed_images(
        context: dg.AssetCheckExecutionContext,
        shop: ShopDatabase,
        replicate: ReplicateResource,
        policy: EmbeddingPolicy,
    ) -> dg.AssetCheckResult:
        reports = Reports(shop.schema())
        window, label = checked_window(context)
        failed = reports.failure_reasons(window, replicate.spec.reference, policy.max_attempts)
        reasons = Counter(row.error or "unknown" for row in failed)  # stored without query strings
        uncovered = uncovered_images(reports, partitions)
        fixes = {kind: UNCOVERED_FIX[kind] for kind, count in uncovered.items() if count}
        return dg.AssetCheckResult(
            passed=not failed,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{len(failed)} images in {label} failed for good" if failed else None,
            metadata={
                "failed_images": len(failed),
                "reasons": dg.MetadataValue.json(dict(reasons.most_common(10))),
                "first_image_ids": dg.MetadataValue.json([row.product_image_id for row in failed[:FIRST_IDS]]),
                "max_attempts": policy.max_attempts,
                **{f"images_{kind}": count for kind, count in uncovered.items()},
                "uncovered_images_what_to_do": dg.MetadataValue.json(fixes),
            },
        )

    return [products_without_embeddings, embedding_dimensions, failed_images]
