"""Similar products and the search index, downstream of `embedding_table` (both unpartitioned).

`product_similarities` keeps each product's most similar products in the shop's database, updated incrementally
when new embeddings land (its automation condition, evaluated by the `similarity_automation` sensor), rebuilt
in full on demand (`full_rebuild`) and when the model changes. `similarity_index` writes the search index the
`search` command and the HTTP API read.
"""

import random
import re
import time
from pathlib import Path

import dagster as dg

from replicate_assets.db.browse import Browse
from replicate_assets.db.schema import Schema
from replicate_assets.db.similarities import SimilarityStore
from replicate_assets.db.vectors import VectorStore
from replicate_assets.defs.embeddings.assets import fix_first
from replicate_assets.defs.resources import ReplicateResource, ShopDatabase, SimilarityOptions
from replicate_assets.defs.similarity.automation import WHEN_PARENT_DATA_IS_NEWER
from replicate_assets.similarity.index import build, recall, slug
from replicate_assets.similarity.update import update_similarities

GROUP = "similarity"


class RebuildConfig(dg.Config):
    full_rebuild: bool = False
    """Compute every list again (otherwise only what new, changed or removed images touch)."""


@dg.asset(
    deps=["embedding_table"],
    group_name=GROUP,
    kinds={"sql", "python"},
    automation_condition=WHEN_PARENT_DATA_IS_NEWER,
    description="Each product's top K similar products (its best pair of images against theirs; never itself, never "
    "a product showing the very same image, never a soft-deleted one) in product_similarities, and products "
    "sharing an image in product_duplicates. Updated incrementally as embeddings land.",
)
def product_similarities(
    context: dg.AssetExecutionContext,
    config: RebuildConfig,
    shop: ShopDatabase,
    replicate: ReplicateResource,
    similarity: SimilarityOptions,
) -> dg.MaterializeResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    updated = update_similarities(schema, model, similarity.k, full=config.full_rebuild)
    context.log.info(
        f"{updated.mode} update ({updated.reason}): {updated.lists_written} lists, {updated.rows_written} rows "
        f"written in {updated.seconds:.1f} s; {updated.duplicate_pairs} duplicate pairs"
    )
    if updated.vectors_skipped:
        context.log.warning(
            f"{updated.vectors_skipped} rows of product_embeddings for {model} are not usable vectors (not a JSON "
            "array of 768 numbers, or all zeros) and are left out of the lists; rows embedding_table writes are "
            "checked, so these were written by other code: fix or delete them"
        )
    return dg.MaterializeResult(
        metadata={
            "mode": updated.mode,
            "reason": updated.reason,
            "images": updated.images,
            "products": updated.products,
            "lists_written": updated.lists_written,
            "lists_recomputed": updated.lists_recomputed,
            "rows_written": updated.rows_written,
            "duplicate_pairs": updated.duplicate_pairs,
            "vectors_copied": updated.vectors_copied,
            "vectors_skipped": updated.vectors_skipped,
            "seconds": updated.seconds,
            **{f"seconds_{phase}": value for phase, value in updated.phases.items()},
            "sql_vector_index": updated.sql_index,
            "k": similarity.k,
            "model": model,
            "sample": dg.MetadataValue.md(sample_markdown(schema, model)),
        }
    )


def sample_markdown(schema: Schema, model: str, count: int = 5, top: int = 5) -> str:
    """A few products drawn at random with their top `top` names and scores, as a Markdown table (names escaped)."""
    browse = Browse(schema, model)
    drawn = browse.sample(count, random.Random())
    lists = {p: listed[:top] for p, listed in SimilarityStore(schema).lists(drawn).items()}
    names = browse.products([*drawn, *(other for listed in lists.values() for other, _ in listed)])
    if not drawn:
        return "No lists yet."

    def named(product: int) -> str:
        found = names.get(product)
        return f"{md_text(found.name) if found and found.name else '(no name)'} (#{product})"

    header = ["product", *(f"{n}." for n in range(1, top + 1))]
    rows = [
        [named(p), *(f"{named(o)} {s:.3f}" for o, s in lists.get(p, [])), *[""] * (top - len(lists.get(p, [])))]
        for p in drawn
    ]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def md_text(text: str) -> str:
    """Text from the shop as Markdown text: HTML and Markdown's own characters cannot act."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+\-!|~])", r"\\\1", " ".join(text.split()))


@dg.asset(
    deps=[product_similarities],
    group_name=GROUP,
    kinds={"python"},
    automation_condition=WHEN_PARENT_DATA_IS_NEWER,
    description="The search index over every live image vector: exact search in memory up to 20,000 images; above, "
    "an inverted-file index (faiss, 8-bit vectors) written to SIMILARITY_INDEX_DIR, with its measured recall@10.",
)
def similarity_index(
    context: dg.AssetExecutionContext, shop: ShopDatabase, replicate: ReplicateResource, similarity: SimilarityOptions
) -> dg.MaterializeResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    started = time.monotonic()
    images = VectorStore(schema).catalogue(model).images
    index = build(images, model)
    path = index.save(similarity.index_folder) if index.kind != "exact" else None
    if path is None:
        for stale in _saved_files(similarity.index_folder, model):
            stale.unlink()  # exact search needs no file: a stale one must not be served
    built = time.monotonic() - started
    measured = recall(index, images.vectors)
    context.log.info(f"{index.kind} index over {len(index)} images, recall@10 {measured:.3f}, built in {built:.1f} s")
    return dg.MaterializeResult(
        metadata={
            "kind": index.kind,
            "size": len(index),
            "model": model,
            "recall_at_10": round(measured, 4),
            "build_seconds": round(built, 2),
            "path": str(path) if path else "(exact search in memory)",
        }
    )


def _saved_files(folder: str, model: str) -> list[Path]:
    stem = Path(folder) / slug(model)
    return [stem.with_suffix(s) for s in (".faiss", ".npz", ".json") if stem.with_suffix(s).exists()]


ASSETS = [product_similarities, similarity_index]
