"""The three assets, in order: product_images -> clip_embeddings -> embedding_table.

Each reads `context.partition_time_window`, so one run may cover one day or any range of days, and keeps
memory bounded by the chunk: rows are streamed page by page and outcomes are written chunk by chunk.
"""

import re
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import sqlalchemy as sa

from replicate_assets.catalogue import (
    FAILED,
    INDEXED,
    PENDING,
    Catalogue,
    ShopDatabase,
    Window,
    resolve_image_url,
    url_hash,
)
from replicate_assets.partitions import daily_partitions, single_run
from replicate_assets.progress_log import ProgressLog, failed_line, indexed_line
from replicate_assets.replicate import ImageOutcome, ReplicateClient, ReplicateConfigError
from replicate_assets.settings import Settings

SETTINGS = Settings.from_env()
QUERY_STRING = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s'\":]*")
PROGRESS_EVERY_SECONDS = 10.0


class ChunkConfig(dg.Config):
    chunk_size: int = SETTINGS.chunk_size
    """Images read, sent and written together (the Laravel version's --chunk)."""
    max_attempts: int = SETTINGS.max_attempts
    """Attempts per image before it stays failed until its row changes."""


def redact(text: str) -> str:
    """Drop query strings from URLs in a message: signed storage URLs carry credentials there."""
    return QUERY_STRING.sub(r"\1?…", text)


def window_metadata(catalogue: Catalogue, window: Window, model: str) -> dict[str, Any]:
    counts = catalogue.window_summary(window, model)
    return {
        "images_in_window": counts["images"],
        "images_pending": counts[PENDING],
        "images_indexed": counts[INDEXED],
        "images_failed": counts[FAILED],
        "products_in_window": counts["products"],
        "products_with_embeddings": counts["products_embedded"],
    }


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="replicate",
    kinds={"sql"},
    description="The window's product images that need an embedding, with their resolved URLs; unusable "
    "paths are recorded as failed with their reason.",
)
def product_images(
    context: dg.AssetExecutionContext, config: ChunkConfig, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.MaterializeResult:
    catalogue = shop.catalogue()
    window = Window.of(context.partition_time_window)
    model = replicate.spec.reference
    marked = {PENDING: 0, "unusable": 0, "up_to_date": 0, "gave_up": 0}
    for page in catalogue.window_images(window, model, config.chunk_size):
        changes = []
        for row in page:
            verdict, change = _classify(row, model, shop.image_base_url, config.max_attempts)
            marked[verdict] += 1
            if change:
                changes.append(change)
        catalogue.save_outcomes(changes)
    context.log.info(
        f"{model}: {marked[PENDING]} images to embed, {marked['up_to_date']} up to date, "
        f"{marked['unusable']} with unusable paths, {marked['gave_up']} failed {config.max_attempts} times"
    )
    return dg.MaterializeResult(
        metadata={
            **window_metadata(catalogue, window, model),
            "images_marked_pending": marked[PENDING],
            "images_unusable_path": marked["unusable"],
            "images_up_to_date": marked["up_to_date"],
            "model": model,
        }
    )


def _classify(
    row: sa.Row, model: str, image_base_url: str | None, max_attempts: int
) -> tuple[str, dict[str, Any] | None]:
    """Decide what one image needs: (verdict, outcome row to write or None)."""
    url, reason = resolve_image_url(row.path, image_base_url)
    change = {
        "product_image_id": row.id,
        "model": model,
        "product_id": row.product_id,
        "image_url": url,
        "url_hash": url_hash(url) if url else None,
        "image_updated_at": row.updated_at,
        "embedding": None,
        "dimensions": None,
        "predict_time": None,
        "prediction_id": None,
    }
    same_image = row.outcome_url == url and row.image_updated_at == row.updated_at
    if row.status is not None and same_image:
        if row.status in (INDEXED, PENDING):
            return ("up_to_date" if row.status == INDEXED else PENDING), None
        if row.attempts >= max_attempts:
            return "gave_up", None
        return PENDING, {**change, "status": PENDING, "error": None, "attempts": row.attempts}
    if (
        row.status is None
        and url
        and row.embedding_model == model
        and row.embedding_url == url
        and row.embedding_updated_at is not None
        and row.embedding_updated_at >= row.updated_at
    ):
        return "up_to_date", None  # embedded before this pipeline kept outcomes
    if reason:
        return "unusable", {**change, "status": FAILED, "error": reason, "attempts": max_attempts}
    return PENDING, {**change, "status": PENDING, "error": None, "attempts": 0}


@dg.asset(
    deps=[product_images],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="replicate",
    kinds={"python"},
    pool="replicate_api",
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=SETTINGS.retry_delay_seconds, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    description="A CLIP embedding from Replicate for every pending image of the window; each chunk of "
    "outcomes is stored as soon as it completes, so a crash loses at most the chunk in flight.",
)
def clip_embeddings(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    shop: ShopDatabase,
    replicate: ReplicateClient,
    progress_log: ProgressLog,
) -> dg.MaterializeResult:
    _require_upstream(context)
    catalogue = shop.catalogue()
    window = Window.of(context.partition_time_window)
    model = replicate.spec.reference
    run = EmbeddingRun(context, catalogue, progress_log, model, config)
    started = time.monotonic()
    try:
        for outcome in replicate.embed_images(run.urls_to_send(window)):
            run.record(outcome)
    except ReplicateConfigError as err:
        run.flush()  # everything already paid for stays stored
        raise dg.Failure(description=redact(str(err)), allow_retries=False) from None
    run.flush()
    elapsed = time.monotonic() - started
    stats = replicate.stats
    metadata = {
        **window_metadata(catalogue, window, model),
        "images_embedded": run.counts[INDEXED],
        "images_failed_now": run.counts[FAILED],
        "images_retry_later": run.counts["retry"],
        "embeddings_reused": run.counts["reused"],
        "predictions_created": stats.creates,
        "throttled_429": stats.throttled,
        "transient_errors": stats.transient_errors,
        "possible_duplicate_creates": stats.possible_duplicate_creates,
        "replicate_seconds_billed": round(run.billed_seconds, 4),
        "estimated_cost_usd": round(run.billed_seconds * replicate.spec.usd_per_second, 6),
        "images_per_second": round(run.counts[INDEXED] / elapsed, 2) if elapsed > 0 else 0.0,
        "elapsed_seconds": round(elapsed, 2),
        "model": model,
    }
    if run.counts["retry"]:
        # Replicate was down past the in-step retries: fail the step so the RetryPolicy tries again later.
        # The retry sends only what is still pending.
        raise dg.Failure(
            description=f"{run.counts['retry']} images met transient Replicate errors (last: "
            f"{run.last_transient}); they stay pending and the step will be retried",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _require_upstream(context: dg.AssetExecutionContext) -> None:
    done = context.instance.get_materialized_partitions(product_images.key)
    missing = [key for key in context.partition_keys if key not in done]
    if missing:
        span = missing[0] if len(missing) == 1 else f"{missing[0]}...{missing[-1]}"
        option = "--partition" if len(missing) == 1 else "--partition-range"
        raise dg.Failure(
            description=f"product_images has not been materialized for {len(missing)} partition(s) ({span}). "
            f"Run `dagster asset materialize -m replicate_assets --select 'product_images+' {option} {span}` "
            "to find the images and embed them in one go.",
            allow_retries=False,
        )


class EmbeddingRun:
    """The bookkeeping of one clip_embeddings step: which rows wait on which URL, and chunked writes."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        catalogue: Catalogue,
        progress_log: ProgressLog,
        model: str,
        config: ChunkConfig,
    ):
        self.context, self.catalogue, self.progress_log = context, catalogue, progress_log
        self.model, self.config = model, config
        self.waiting: dict[str, list[sa.Row]] = {}  # URL in flight -> the rows that want its embedding
        self.completed: dict[str, ImageOutcome] = {}  # outcomes not yet written, by URL
        self.buffer: list[tuple[sa.Row, ImageOutcome]] = []
        self.counts = {INDEXED: 0, FAILED: 0, "retry": 0, "reused": 0}
        self.billed_seconds = 0.0
        self.last_transient = ""
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.last_progress = self.started

    def urls_to_send(self, window: Window) -> Iterator[str]:
        """Each pending URL once; rows whose URL is in flight or already paid for wait or reuse it."""
        self.total = self.catalogue.window_summary(window, self.model)[PENDING]
        self.context.log.info(f"{self.total} images pending for {self.model}")
        for page in self.catalogue.pending_images(window, self.model, self.config.chunk_size):
            known = self.catalogue.known_embeddings(self.model, {row.image_url for row in page})
            for row in page:
                url = row.image_url
                if url in self.waiting:
                    self.waiting[url].append(row)
                elif url in self.completed and self.completed[url].ok:
                    self._add(row, self.completed[url], reused=True)
                elif url in known and known[url].updated_at >= row.image_updated_at:
                    self._add(row, ImageOutcome(url, embedding=known[url].embedding), reused=True)
                else:
                    self.waiting[url] = [row]
                    yield url

    def record(self, outcome: ImageOutcome) -> None:
        self.billed_seconds += outcome.predict_time
        self.completed[outcome.url] = outcome
        for index, row in enumerate(self.waiting.pop(outcome.url, [])):
            self._add(row, outcome, reused=index > 0)

    def _add(self, row: sa.Row, outcome: ImageOutcome, reused: bool) -> None:
        self.buffer.append((row, outcome))
        if reused and outcome.ok:
            self.counts["reused"] += 1
        if len(self.buffer) >= self.config.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Make the buffered outcomes durable, then log them (Dagster log and the plain file)."""
        if not self.buffer:
            return
        rows, lines = [], []
        for row, outcome in self.buffer:
            attempts = row.attempts + (0 if outcome.ok and outcome.prediction_id is None else 1)
            change = {
                "product_image_id": row.product_image_id,
                "model": self.model,
                "attempts": attempts,
                "prediction_id": outcome.prediction_id,
                "predict_time": outcome.predict_time,
                "embedding": None,
                "dimensions": None,
            }
            if outcome.ok:
                change.update(
                    status=INDEXED, embedding=outcome.embedding, dimensions=len(outcome.embedding), error=None
                )
                self.counts[INDEXED] += 1
                lines.append(indexed_line(row.product_image_id, row.product_id))
                rows.append(change)
                continue
            error = redact(outcome.error or "unknown error")
            if outcome.transient and attempts < self.config.max_attempts:
                change.update(status=PENDING, error=error)
                self.counts["retry"] += 1
                self.last_transient = error
                lines.append(failed_line(row.product_image_id, f"{error} (attempt {attempts}, will retry)"))
            else:
                if outcome.transient:
                    error = f"{error} (gave up after {attempts} attempts)"
                change.update(status=FAILED, error=error)
                self.counts[FAILED] += 1
                lines.append(failed_line(row.product_image_id, error))
            rows.append(change)
        self.catalogue.update_outcomes(rows)
        self.progress_log.write(lines)
        self.context.log.info("\n".join(lines))
        self.done += len(self.buffer)
        self.buffer.clear()
        self.completed.clear()
        self._report_progress()

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now - self.last_progress < PROGRESS_EVERY_SECONDS and self.done < self.total:
            return
        self.last_progress = now
        rate = self.done / (now - self.started) if now > self.started else 0.0
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        self.context.log.info(f"progress: {self.done}/{self.total} images, {rate:.1f} images/s, about {eta} left")


@dg.asset(
    # It reads product_images too (the window's rows); the direct edge also makes `--select product_images+`
    # cover the whole chain.
    deps=[product_images, clip_embeddings],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    group_name="replicate",
    kinds={"sql"},
    description="product_embeddings in the shop database: one row per image, upserted, never duplicated.",
)
def embedding_table(
    context: dg.AssetExecutionContext, config: ChunkConfig, shop: ShopDatabase, replicate: ReplicateClient
) -> dg.MaterializeResult:
    catalogue = shop.catalogue()
    window = Window.of(context.partition_time_window)
    model = replicate.spec.reference
    written, started = 0, time.monotonic()
    for count in catalogue.publish_embeddings(window, model, config.chunk_size * 20):
        written += count
    elapsed = time.monotonic() - started
    context.log.info(f"upserted {written} rows into product_embeddings in {elapsed:.1f} s")
    return dg.MaterializeResult(
        metadata={
            **window_metadata(catalogue, window, model),
            "rows_upserted": written,
            "rows_per_second": round(written / elapsed, 1) if elapsed > 0 else 0.0,
            "model": model,
        }
    )
