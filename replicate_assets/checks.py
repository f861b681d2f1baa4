"""Asset checks: what the Laravel version's monitoring queries showed, evaluated after every run."""

from collections import Counter

import dagster as dg

from replicate_assets.assets import SETTINGS, clip_embeddings, embedding_table
from replicate_assets.catalogue import ShopDatabase, Window
from replicate_assets.replicate import DIMENSIONS, ReplicateClient, vector_problem

FIRST_IDS = 20


def checked_window(context: dg.AssetCheckExecutionContext) -> tuple[Window, str]:
    """The run's partition window, or all time when the check runs outside a partitioned run."""
    if context.has_partition_key or context.has_partition_key_range:
        keys = context.partition_keys
        label = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        return Window.of(context.partition_time_window), label
    return Window(), "all"


@dg.asset_check(
    asset=embedding_table,
    description="Products that have images in the checked window but no embedding from the configured model "
    "(the Laravel version's LEFT JOIN query), per partition.",
)
def products_without_embeddings(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.AssetCheckResult:
    catalogue = shop.catalogue()
    window, label = checked_window(context)
    missing = catalogue.products_without_embeddings(window, replicate.spec.reference)
    per_partition = Counter(day.isoformat() for days in missing.values() for day in days)
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(missing)} products with images in {label} have no embedding" if missing else None,
        metadata={
            "products_without_embeddings": len(missing),
            "first_product_ids": dg.MetadataValue.json(list(missing)[:FIRST_IDS]),
            "per_partition": dg.MetadataValue.json(dict(sorted(per_partition.items()))),
            "products_without_images": catalogue.products_without_images(),
            "window": label,
        },
    )


@dg.asset_check(
    asset=clip_embeddings,
    blocking=True,
    description="Every embedding about to reach product_embeddings has the model's 768 dimensions, finite values "
    "and a non-zero norm; bad ones are marked failed, and the check blocks embedding_table.",
)
def embedding_dimensions(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.AssetCheckResult:
    catalogue = shop.catalogue()
    window, label = checked_window(context)
    model = replicate.spec.reference
    checked, bad = 0, {}
    for page in catalogue.unpublished_embeddings(window, model, SETTINGS.chunk_size * 20):
        checked += len(page)
        for row in page:
            problem = vector_problem(row.embedding, DIMENSIONS)
            if problem:
                bad[row.product_image_id] = problem
    if bad:
        catalogue.quarantine(
            list(bad), model, "rejected by the embedding_dimensions check: " + next(iter(bad.values()))
        )
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


@dg.asset_check(
    asset=clip_embeddings,
    description="Images that failed for good (attempts used up), with the reasons and their counts. They are "
    "tried again when their product_images row changes, or after `replicate-assets retry-failed`.",
)
def failed_images(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.AssetCheckResult:
    window, label = checked_window(context)
    failed = shop.catalogue().failure_reasons(window, replicate.spec.reference, SETTINGS.max_attempts)
    reasons = Counter(row.error or "unknown" for row in failed)  # stored without query strings
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(failed)} images in {label} failed for good" if failed else None,
        metadata={
            "failed_images": len(failed),
            "reasons": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "first_image_ids": dg.MetadataValue.json([row.product_image_id for row in failed[:FIRST_IDS]]),
        },
    )
