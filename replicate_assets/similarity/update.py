"""Bring `product_similarities` up to date: incrementally (what changed since the last update), or in full.

An increment gives the same lists as a full rebuild: new and changed products get their lists computed against
every image; the lists they now enter gain them (scores are symmetric, so their exact scores say which); lists
that showed a changed, removed or soft-deleted product are computed again. A full rebuild happens on demand,
when the model changes, and when so much changed that recomputing the touched lists would cost more.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from replicate_assets.db.instants import utcnow
from replicate_assets.db.pgvector import TABLE, PgVectorTable
from replicate_assets.db.schema import Schema
from replicate_assets.db.similarities import SimilarityStore
from replicate_assets.db.vectors import Catalogue, VectorStore
from replicate_assets.similarity.lists import (
    Lists,
    duplicate_pairs,
    new_product_lists,
    recomputed,
    similar_products,
    updated_in_place,
)

# Where an increment costs more than a full rebuild (measured: BENCHMARKS.md, "where an increment becomes a
# rebuild"). An increment's cost is the lists it computes against every image (offers are cheap): about 4.3 ms a
# list at 100,000 images, growing with the images; a rebuild grows faster (about images^1.5 above the exact size).
# Rebuild when the lists to compute exceed FULL_ABOVE of the products or LISTS_PER_ROOT x sqrt(images) ...
FULL_ABOVE = 0.2
LISTS_PER_ROOT = 30
FULL_FROM = 1000  # ... in a catalogue of this many products or more (a smaller one is cheap either way)


def rebuild_limit(images: int, products: int) -> float:
    """How many lists an increment may compute against every image before a full rebuild is cheaper."""
    if products < FULL_FROM:
        return float("inf")
    return min(FULL_ABOVE * products, LISTS_PER_ROOT * math.sqrt(images))


@dataclasses.dataclass(frozen=True)
class Updated:
    mode: str  # "full", "incremental" or "none"
    reason: str
    images: int
    products: int
    lists_written: int
    lists_recomputed: int  # lists computed against every image (new and changed products, lists that showed one)
    rows_written: int
    duplicate_pairs: int
    vectors_copied: int
    vectors_skipped: int  # rows of product_embeddings that are not usable vectors (wrong length, zero, not JSON)
    seconds: float
    phases: dict[str, float]  # seconds spent copying vectors, reading them, computing lists, writing rows
    sql_index: str  # the vector index inside the shop database: what it holds, or why there is none


def update_similarities(schema: Schema, model: str, k: int, full: bool = False) -> Updated:
    """Copy the new embeddings' vectors, then update the lists (in full with `full=True`)."""
    started = last = time.monotonic()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        phases[name] = round(phases.get(name, 0.0) + now - last, 3)
        last = now

    vectors, store = VectorStore(schema), SimilarityStore(schema)
    synced = vectors.sync(model)
    lap("copy")
    catalogue = vectors.catalogue(model)
    images = catalogue.images
    lap("read")
    stored_model = store.model()
    every = set(np.unique(images.products).tolist())
    reason = (
        "asked for"
        if full
        else f"the model changed ({stored_model} -> {model})"
        if stored_model not in (None, model) or synced.model_changed
        else "no lists yet"
        if stored_model is None and len(images)
        else ""
    )
    at, pairs = utcnow(), duplicate_pairs(images)
    if not reason:
        touched, lists, recomputed = _increment(catalogue, every, store, k, pairs)
        if touched is None:
            limit = rebuild_limit(len(images), len(every))
            reason = f"{recomputed:,} lists to compute again, more than a rebuild costs (from {limit:,.0f})"
    if reason:
        lists, touched = similar_products(images, k, pairs), None
        lap("compute")
        written = store.replace(lists, model, None, at)
        mode, count, recomputed = "full", len(every), len(every)
    elif touched:
        lap("compute")
        written = store.replace(lists, model, touched, at)
        mode, count = "incremental", len(touched)
    else:
        written, mode, count, reason, recomputed = 0, "none", 0, "nothing changed", 0
    duplicates = store.replace_duplicates(pairs, model, at) if mode != "none" else 0
    vectors.mark_listed(model, catalogue)
    lap("write")
    sql_index = _mirror(schema, images, None if mode == "full" else catalogue.unlisted, model)
    lap("sql_index")
    return Updated(
        mode,
        reason or "new or changed images",
        len(images),
        len(every),
        count,
        recomputed,
        written,
        duplicates,
        synced.copied,
        synced.skipped,
        round(time.monotonic() - started, 3),
        phases,
        sql_index,
    )


def _mirror(schema: Schema, images, changed, model: str) -> str:
    """Keep `product_image_vectors` (pgvector) in step where the database can hold it; say what it holds."""
    table = PgVectorTable(schema)
    why = table.unavailable()
    if why:
        return f"none: {why}"
    written = table.sync(images, changed, model)
    return f"pgvector: {len(images)} vectors in {TABLE} (HNSW, cosine), {written} written"


def _increment(
    catalogue: Catalogue, products: set[int], store: SimilarityStore, k: int, pairs: dict
) -> tuple[set[int] | None, Lists | None, int]:
    """The lists that change, their new contents, and how many of them are computed against every image (the
    rest are updated in place); (None, None, that count) when a full rebuild is cheaper. `products`: the live
    products.

    Products whose vectors changed (new images, changed ones, an image removed) are scored against every image:
    that gives their own lists, the lists they now enter (above the list's K-th score), and their new score in
    every list that shows them. A list that showed a changed or removed product is updated in place when its new
    K-th entry is still at least its old K-th (no unlisted product can rank above it); else computed again."""
    images = catalogue.images
    new = set(np.unique(images.products[catalogue.unlisted]).tolist())
    shrunk = catalogue.gone_products & products  # live products that lost an image
    scored = new | shrunk
    left = (catalogue.gone_products - products) | scored  # gone, or scored anew: their old scores are stale
    if not new and not catalogue.gone_products:
        return set(), None, 0
    limit = rebuild_limit(len(images), len(products))
    if len(scored) > limit:
        return None, None, len(scored)
    # lists that show a gone or changed product (or a new one: an update killed after writing the lists it took
    # new products into, before stamping their vectors, leaves them listed and unlisted)
    showing = store.lists((store.containing(catalogue.gone_products | new) & products) - scored)
    watch = {b: {q for q, _ in listed if q in scored} for b, listed in showing.items()}
    own, offers, rescored = new_product_lists(images, sorted(scored), k, store.kth_scores(k), pairs, watch)
    changes = {b: dict(v) for b, v in offers.items() if b not in scored}
    for b, found in rescored.items():
        changes.setdefault(b, {}).update(found)
    current = {**store.lists(set(changes) - set(showing)), **showing}
    kept, again = updated_in_place(current, changes, left, k)
    if len(scored) + len(again) > limit:
        return None, None, len(scored) + len(again)
    parts, touched = [own, kept], set(catalogue.gone_products) | scored | (set(current) - again)
    if again:
        parts.append(recomputed(images, sorted(again), k, pairs))
        touched |= again
    lists = Lists(*(np.concatenate([getattr(part, f) for part in parts]) for f in ("p", "q", "s", "rank")))
    return touched, lists, len(scored) + len(again)
