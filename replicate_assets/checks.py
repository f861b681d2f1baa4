"""Asset checks: what the Laravel version's monitoring queries showed, evaluated after every run."""

import dagster as dg

from replicate_assets.assets import embedding_table
from replicate_assets.catalogue import ShopDatabase, Window
from replicate_assets.replicate import ReplicateClient

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
    description="Products that have images in the checked window but no "
    "embedding from the configured model (the Laravel version's LEFT JOIN query).",
)
def products_without_embeddings(
    context: dg.AssetCheckExecutionContext, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.AssetCheckResult:
    catalogue = shop.catalogue()
    window, label = checked_window(context)
    missing = catalogue.products_without_embeddings(window, replicate.spec.reference)
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(missing)} products with images in {label} have no embedding" if missing else None,
        metadata={
            "products_without_embeddings": len(missing),
            "first_product_ids": dg.MetadataValue.json(missing[:FIRST_IDS]),
            "products_without_images": catalogue.products_without_images(),
            "window": label,
        },
    )
