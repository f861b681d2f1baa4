"""The three assets, in order: product_images -> clip_embeddings -> embedding_table.

Each reads `context.partition_time_window`, so one run may cover one day or any range of days, and keeps memory
bounded by the chunk: rows are streamed page by page and outcomes are written chunk by chunk. The assets are
built by `build_assets` because their partitions start at a configured date.
"""

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dagster as dg

from replicate_assets.chain import CHAIN_KEYS, materialize_command, shell_line
from replicate_assets.db import (
    FAILED,
    INDEXED,
    PENDING,
    CatalogueError,
    EmbeddingStore,
    OutcomeStore,
    Reports,
    Window,
    as_instant,
)
from replicate_assets.defs.partitions import single_run
from replicate_assets.defs.resources import EmbeddingPolicy, ProgressLog, ReplicateResource, ShopDatabase
from replicate_assets.pipeline.classify import GAVE_UP, TO_EMBED, UNUSABLE, UP_TO_DATE, classify
from replicate_assets.pipeline.embedding_run import EmbeddingRun
from replicate_assets.pipeline.progress_file import failed_line
from replicate_assets.replicate import ReplicateClient, ReplicateConfigError, ReplicateUnavailableError
from replicate_assets.replicate.embedder import Embedder
from replicate_assets.urls import redact

CHAIN = dg.AssetSelection.assets(*CHAIN_KEYS)  # what sensors run: the whole chain
INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)
PUBLISH_PAGE = 1000


class Interrupted(Exception):
    """The step was told to stop (Ctrl-C, SIGTERM, a canceled run) and stored what it had."""


@contextlib.contextmanager
def fix_first() -> Iterator[None]:
    """A setting or a shop that no retry can help (no token, an unknown model, a missing column) fails the step
    at once with its one-line message."""
    try:
        yield
    except (ReplicateConfigError, CatalogueError) as err:
        raise dg.Failure(description=redact(str(err)), allow_retries=False) from None


def window_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Window:
    time_window = context.partition_time_window
    return Window(as_instant(time_window.start), as_instant(time_window.end))


def window_metadata(reports: Reports, window: Window, model: str) -> dict[str, Any]:
    counts = reports.window_summary(window, model)
    return {
        "images_in_window": counts["images"],
        "images_pending": counts[PENDING],
        "images_indexed": counts[INDEXED],
        "images_failed": counts[FAILED],
        "products_in_window": counts["products"],
        "products_with_embeddings": counts["products_embedded"],
    }


def build_assets(partitions_def: dg.PartitionsDefinition, retry_delay_seconds: float) -> list[dg.AssetsDefinition]:
    """The chain's three assets over `partitions_def`; clip_embeddings retries after `retry_delay_seconds`."""
    common: dict[str, Any] = {
        "partitions_def": partitions_def,
        "backfill_policy": single_run,
        "group_name": "replicate",
    }

    @dg.asset(
        **common,
        kinds={"sql"},
        description="The window's product images that need an embedding, with their resolved URLs; unusable "
        "paths and orphan images are recorded as failed with their reason.",
    )
    def product_images(
        context: dg.AssetExecutionContext,
        shop: ShopDatabase,
        replicate: ReplicateResource,
        policy: EmbeddingPolicy,
        progress_log: ProgressLog,
    ) -> dg.MaterializeResult:
        return find_images(context, shop, replicate, policy, progress_log)

    @dg.asset(
        **common,
        deps=[product_images],
        kinds={"python"},
        pool="replicate_api",
        retry_policy=dg.RetryPolicy(
            max_retries=3, delay=retry_delay_seconds, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
        description="A CLIP embedding from Replicate for every pending image of the window; each chunk of "
        "outcomes is stored as soon as it completes, and predictions an interrupted run created are taken over.",
    )
    def clip_embeddings(
        context: dg.AssetExecutionContext,
        shop: ShopDatabase,
        replicate: ReplicateResource,
        policy: EmbeddingPolicy,
        progress_log: ProgressLog,
    ) -> dg.MaterializeResult:
        return embed_window(context, shop, replicate, policy, progress_log)

    @dg.asset(
        **common,
        # It reads product_images too (the window's rows); the direct edge keeps the chain obvious in the UI.
        deps=[product_images, clip_embeddings],
        kinds={"sql"},
        description="product_embeddings in the shop database: one row per image, upserted, never duplicated.",
    )
    def embedding_table(
        context: dg.AssetExecutionContext, shop: ShopDatabase, replicate: ReplicateResource
    ) -> dg.MaterializeResult:
        return publish_window(context, shop, replicate)

    return [product_images, clip_embeddings, embedding_table]


# -- product_images -------------------------------------------------------------------------------------------------


def find_images(
    context: dg.AssetExecutionContext,
    shop: ShopDatabase,
    replicate: ReplicateResource,
    policy: EmbeddingPolicy,
    progress_log: ProgressLog,
) -> dg.MaterializeResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    outcomes, window = OutcomeStore(schema), window_of(context)
    marked: Counter[str] = Counter()
    for page in outcomes.window_images(window, model, policy.chunk_size):
        new, reset, lines = [], [], []
        for row in page:
            decision = classify(row, model, shop.image_base_url, policy.max_attempts)
            marked[decision.verdict] += 1
            change = decision.change
            if change:
                change["max_attempts"] = policy.max_attempts
                (new if decision.new else reset).append(change)
                if decision.verdict == UNUSABLE:
                    lines.append(failed_line(row.id, redact(change["error"])))
        outcomes.add(new)
        outcomes.replace(reset)
        progress_log.file().write(lines)
    orphans, first_orphans = Reports(schema).orphans(window)
    context.log.info(
        f"{model}: {marked[TO_EMBED]} images to embed, {marked[UP_TO_DATE]} up to date, {marked[UNUSABLE]} "
        f"unusable (bad path or no product), {marked[GAVE_UP]} given up after {policy.max_attempts} attempts"
    )
    return dg.MaterializeResult(
        metadata={
            **window_metadata(Reports(schema), window, model),
            "images_marked_pending": marked[TO_EMBED],
            "images_unusable": marked[UNUSABLE],
            "images_orphaned": orphans,
            "first_orphan_image_ids": dg.MetadataValue.json(first_orphans),
            "images_up_to_date": marked[UP_TO_DATE],
            "model": model,
        }
    )


# -- clip_embeddings ------------------------------------------------------------------------------------------------


def embed_window(
    context: dg.AssetExecutionContext,
    shop: ShopDatabase,
    replicate: ReplicateResource,
    policy: EmbeddingPolicy,
    progress_log: ProgressLog,
) -> dg.MaterializeResult:
    require_upstream(context)
    with fix_first():
        schema = shop.schema()
    window = window_of(context)
    with fix_first():
        client = replicate.get_client()
    model = client.spec.reference
    run = EmbeddingRun(
        context.log,
        OutcomeStore(schema),
        progress_log.file(),
        model,
        owner=context.run_id,
        chunk_size=policy.chunk_size,
        max_attempts=policy.max_attempts,
        secrets=(replicate.api_token or "",),
    )
    started = time.monotonic()
    try:
        with run.claims_kept(), client.embedder() as embedder:
            try:
                resume(run, embedder, window)
                for outcome in embedder.embed(run.urls_to_send(window)):
                    run.record(outcome)
                run.flush()
            except (ReplicateConfigError, ReplicateUnavailableError) as err:
                stop(run, embedder)
                metadata = embed_metadata(run, client, schema, window, started)
                retry = isinstance(err, ReplicateUnavailableError)
                raise dg.Failure(description=redact(str(err)), allow_retries=retry, metadata=metadata) from None
            except INTERRUPTS:
                stop(run, embedder)
                raise Interrupted() from None
    except (Interrupted, *INTERRUPTS):
        pending = Reports(schema).window_summary(window, model)[PENDING]
        raise dg.Failure(
            description=f"interrupted: nothing more was sent to Replicate; what was paid for is stored "
            f"({run.counts[INDEXED]} embedded, {run.counts[FAILED]} failed in this run) and {pending} images stay "
            "pending for the next run, which takes over predictions still running",
            allow_retries=False,
        ) from None
    metadata = embed_metadata(run, client, schema, window, started)
    if run.counts["left_pending"]:
        raise dg.Failure(
            description=f"{run.counts['left_pending']} images stay pending ({run.last_pending_reason}); "
            "the step will be retried",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def resume(run: EmbeddingRun, embedder: Embedder, window: Window) -> None:
    """Take over predictions an earlier attempt created (they are listed, never created again)."""
    urls, since = run.resume_candidates(window)
    if not urls:
        return
    started = time.monotonic()
    run.log.info(f"{len(urls)} images may have been sent by an interrupted run: looking for their predictions")
    for outcome in embedder.resume(urls, since):
        run.record(outcome)
    run.end_resume(time.monotonic() - started)
    run.log.info(
        f"took over {run.counts['adopted']} predictions in {run.resume_seconds:.1f} s "
        f"({embedder.client.stats.list_requests} list requests); the others are sent now"
    )


def stop(run: EmbeddingRun, embedder: Embedder) -> None:
    """Send nothing more, store what in-flight requests bring back (a second interrupt cuts this short)."""
    try:
        embedder.stop()
        wait = embedder.client.options.sync_wait_seconds + 2
        for outcome in embedder.drain(wait):
            run.record(outcome)
        run.flush()
    except INTERRUPTS:
        run.log.warning("interrupted again: predictions still in flight are taken over by the next run")


def embed_metadata(
    run: EmbeddingRun, client: ReplicateClient, schema: Any, window: Window, started: float
) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    stats = client.stats
    return {
        **window_metadata(Reports(schema), window, run.model),
        "images_embedded": run.counts[INDEXED],
        "images_failed_now": run.counts[FAILED],
        "images_left_pending": run.counts["left_pending"],
        "images_claimed_by_other_runs": run.counts["claimed_elsewhere"],
        "embeddings_reused": run.counts["reused"],
        "predictions_created": stats.creates,
        "predictions_taken_over": run.counts["adopted"],
        "predictions_found_after_timeouts": stats.adopted,
        "prediction_list_requests": stats.list_requests,
        "resume_seconds": round(run.resume_seconds, 2),
        "throttled_429": stats.throttled,
        "refused_requests": stats.refused,
        "transient_errors": stats.transient_errors,
        "possible_duplicate_creates": stats.possible_duplicate_creates,
        "replicate_seconds_billed": round(run.billed_seconds, 4),
        "estimated_cost_usd": round(run.billed_seconds * client.spec.usd_per_second, 6),
        "images_per_second": round(run.counts[INDEXED] / elapsed, 2) if elapsed > 0 else 0.0,
        "elapsed_seconds": round(elapsed, 2),
        "model": run.model,
    }


def require_upstream(context: dg.AssetExecutionContext) -> None:
    done = context.instance.get_materialized_partitions(dg.AssetKey("product_images"))
    missing = [key for key in context.partition_keys if key not in done]
    if missing:
        span = missing[0] if len(missing) == 1 else f"{missing[0]}...{missing[-1]}"
        raise dg.Failure(
            description=f"product_images has not been materialized for {len(missing)} partition(s) ({span}). "
            f"Run `{shell_line(materialize_command(missing[0], missing[-1]))}` to find the images and embed them "
            "in one go.",
            allow_retries=False,
        )


# -- embedding_table ------------------------------------------------------------------------------------------------


def publish_window(
    context: dg.AssetExecutionContext, shop: ShopDatabase, replicate: ReplicateResource
) -> dg.MaterializeResult:
    with fix_first():
        schema, model = shop.schema(), replicate.spec.reference
    window = window_of(context)
    written, started = 0, time.monotonic()
    for count in EmbeddingStore(schema).publish(window, model, PUBLISH_PAGE):
        written += count
    elapsed = time.monotonic() - started
    context.log.info(f"upserted {written} rows into product_embeddings in {elapsed:.1f} s")
    return dg.MaterializeResult(
        metadata={
            **window_metadata(Reports(schema), window, model),
            "rows_upserted": written,
            "rows_per_second": round(written / elapsed, 1) if elapsed > 0 else 0.0,
            "model": model,
        }
    )
