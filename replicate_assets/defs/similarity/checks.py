"""Checks of the similarity domain: the index finds what exact search finds, vectors are fit for search, every
product with an embedding has its neighbours."""

import dagster as dg
import numpy as np
import sqlalchemy as sa

from replicate_assets.db import utcnow
from replicate_assets.db.vectors import VectorStore
from replicate_assets.defs.embeddings.assets import fix_first
from replicate_assets.defs.resources import ReplicateResource, ShopDatabase, SimilarityOptions
from replicate_assets.similarity.index import recall, serving

MIN_RECALL = 0.95
FIRST_IDS = 20


@dg.asset_check(
    asset="similarity_index",
    blocking=True,
    description=f"recall@10 of the index the search serves, against exact search, on 1,000 of its own vectors as "
    f"queries: below {MIN_RECALL} the check fails (exact search always passes).",
)
def similarity_index_recall(
    shop: ShopDatabase, replicate: ReplicateResource, similarity: SimilarityOptions
) -> dg.AssetCheckResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    images = VectorStore(schema).catalogue(model).images
    index = serving(similarity.index_folder, model, images)
    measured = recall(index, images.vectors)
    return dg.AssetCheckResult(
        passed=bool(measured >= MIN_RECALL),
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if measured >= MIN_RECALL else f"recall@10 {measured:.3f} is below {MIN_RECALL}",
        metadata={"recall_at_10": round(measured, 4), "kind": index.kind, "size": len(index), "queries": 1000},
    )


@dg.asset_check(
    asset="product_similarities",
    description="Every search vector has unit length and comes from the configured model.",
)
def search_vectors(shop: ShopDatabase, replicate: ReplicateResource) -> dg.AssetCheckResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    v = schema.vectors
    with schema.engine.connect() as conn:
        models = dict(conn.execute(sa.select(v.c.model, sa.func.count()).group_by(v.c.model)).all())
    images = VectorStore(schema).catalogue(model).images
    norms = np.linalg.norm(images.vectors, axis=1) if len(images) else np.ones(0)
    off = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
    others = {m: n for m, n in models.items() if m != model}
    return dg.AssetCheckResult(
        passed=not len(off) and not others,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(off)} vectors are not unit length; " if len(off) else "")
        + (f"vectors of other models: {others}" if others else "")
        or None,
        metadata={
            "vectors": len(images),
            "not_unit_length": len(off),
            "first_not_unit_image_ids": dg.MetadataValue.json(images.ids[off][:FIRST_IDS].tolist()),
            "other_models": dg.MetadataValue.json(others),
        },
    )


@dg.asset_check(
    asset="product_similarities",
    description="Live products that have an embedding but no list of similar products (a catalogue of one product "
    "has none to offer).",
)
def products_without_neighbours(shop: ShopDatabase, replicate: ReplicateResource) -> dg.AssetCheckResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    products = set(VectorStore(schema).catalogue(model).images.products.tolist())
    with schema.engine.connect() as conn:
        listed = {p for (p,) in conn.execute(sa.select(schema.similarities.c.product_id).distinct())}
    missing = sorted(products - listed) if len(products) > 1 else []
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(missing)} products with embeddings have no similar products" if missing else None,
        metadata={
            "products_with_embeddings": len(products),
            "products_without_neighbours": len(missing),
            "first_product_ids": dg.MetadataValue.json(missing[:FIRST_IDS]),
        },
    )


@dg.asset_check(
    asset="product_similarities",
    description="How far the lists lag behind product_embeddings: images whose embedding is newer than the lists "
    "(or that are gone but still listed), their products, and how long the oldest has waited. WARN beyond "
    "SIMILARITY_MAX_LAG_MINUTES. Also evaluated every hour by the similarity_automation sensor, so a system "
    "that has stopped catching up says so without a run of its own.",
    # With the lists when the automation runs them, and alone every hour (a system that stopped catching up).
    automation_condition=dg.AutomationCondition.cron_tick_passed("0 * * * *")
    | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()),
)
def similarity_lag(
    shop: ShopDatabase, replicate: ReplicateResource, similarity: SimilarityOptions
) -> dg.AssetCheckResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    schema.ensure_tables()
    lag = VectorStore(schema).lag(model)  # before the first lists, every embedding waits
    waited = (utcnow() - lag.oldest).total_seconds() / 60 if lag.oldest else 0.0
    late = lag.images > 0 and waited > similarity.max_lag_minutes
    return dg.AssetCheckResult(
        passed=not late,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{lag.images} images of {lag.products} products have waited up to {waited:.0f} min for the lists "
            f"(over {similarity.max_lag_minutes} min): is the similarity_automation sensor running, and do its runs "
            "succeed?"
        )
        if late
        else None,
        metadata={
            "images_behind": lag.images,
            "products_behind": lag.products,
            "oldest_lag_minutes": round(waited, 1),
            "max_lag_minutes": similarity.max_lag_minutes,
        },
    )


CHECKS = [similarity_index_recall, search_vectors, products_without_neighbours, similarity_lag]
