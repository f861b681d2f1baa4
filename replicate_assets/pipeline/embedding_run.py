"""The bookkeeping of one `clip_embeddings` step: claims, which rows wait on which URL, and chunked writes.

It knows no Dagster: the asset gives it a logger and calls `resume`, `urls_to_send`, `record` and `flush`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

from replicate_assets.db import FAILED, INDEXED, PENDING, Claims, OutcomeStore, Reports, Window, utcnow
from replicate_assets.pipeline.processes import process_alive, process_identity
from replicate_assets.pipeline.progress_file import ProgressFile, failed_line, indexed_line
from replicate_assets.replicate import RETENTION, ImageOutcome
from replicate_assets.urls import redact

PROGRESS_EVERY_SECONDS = 10.0
CLAIM_TTL = dt.timedelta(seconds=90)  # a dead run's claims lapse after this (same host: at once)
HEARTBEAT_SECONDS = 20.0


def counts_as_attempt(outcome: ImageOutcome) -> bool:
    """An attempt is an answer about the image: not an embedding reused, not a run that stopped before one."""
    return not outcome.left_pending and not (outcome.ok and outcome.prediction_id is None)


class EmbeddingRun:
    """One step's work over a window for one model, claimed against other runs and written chunk by chunk."""

    def __init__(
        self,
        log: Any,
        outcomes: OutcomeStore,
        progress: ProgressFile,
        model: str,
        *,
        owner: str,
        chunk_size: int,
        max_attempts: int,
        secrets: tuple[str, ...] = (),
    ):
        self.log, self.outcomes, self.progress = log, outcomes, progress
        self.claims = Claims(outcomes.schema)
        self.model, self.owner, self.chunk_size, self.max_attempts = model, owner, chunk_size, max_attempts
        self.secrets = secrets
        self.process = process_identity()
        self.waiting: dict[str, list[Any]] = {}  # URL in flight -> the rows that want its embedding
        self.completed: dict[str, ImageOutcome] = {}  # outcomes since the current page began, by URL
        self.buffer: list[tuple[Any, ImageOutcome]] = []
        self.counts = {INDEXED: 0, FAILED: 0, "left_pending": 0, "reused": 0, "adopted": 0, "claimed_elsewhere": 0}
        self.billed_seconds = 0.0
        self.resume_seconds = 0.0
        self.last_pending_reason = ""
        self.total = self.done = 0
        self.started = self.last_progress = time.monotonic()

    # -- claims --------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def claims_kept(self) -> Iterator[None]:
        """Renew this run's claims while the block runs; release the ones left when it ends, however it ends."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(Exception):  # a missed beat only shortens the claim
                    self.claims.heartbeat(self.owner, CLAIM_TTL)

        thread = threading.Thread(target=beat, name="claims-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)
            self.claims.release(self.owner)

    def _claim(self, rows: list[Any]) -> list[Any]:
        """The rows this run now holds; rows a live run holds are left to it (and counted)."""
        now = utcnow()
        foreign = [
            r
            for r in rows
            if r.claimed_by not in (None, self.owner) and r.claim_expires_at and r.claim_expires_at >= now
        ]
        dead = {r.claim_process for r in foreign if process_alive(r.claim_process) is False}
        held = self.claims.claim(
            [r.product_image_id for r in rows], self.model, self.owner, self.process, CLAIM_TTL, dead
        )
        self.counts["claimed_elsewhere"] += len(rows) - len(held)
        return [r for r in rows if r.product_image_id in held]

    # -- what to send --------------------------------------------------------------------------------------------

    def resume_candidates(self, window: Window) -> tuple[list[str], dt.datetime | None]:
        """URLs for which a create may have been sent before (an interrupted or dead run, an earlier attempt of
        this step), claimed by this run, and since when to look for their predictions."""
        rows = self._claim(self.claims.resume_candidates(window, self.model, utcnow() - RETENTION))
        for row in rows:
            self.waiting.setdefault(row.image_url, []).append(row)
        since = min((row.sent_at for row in rows), default=None)
        return list(self.waiting), since.replace(tzinfo=dt.UTC) if since else None

    def end_resume(self, seconds: float) -> None:
        """The URLs not taken over wait no more: `urls_to_send` reads their rows again and sends them."""
        self.waiting.clear()
        self.flush()
        self.resume_seconds = seconds

    def urls_to_send(self, window: Window) -> Iterator[str]:
        """Each pending URL once; rows whose URL is in flight or already paid for wait or reuse it."""
        self.total = Reports(self.outcomes.schema).window_summary(window, self.model)[PENDING]
        self.log.info(f"{self.total} images pending for {self.model}")
        for page in self.claims.pending_pages(window, self.model, self.chunk_size):
            # What completed so far becomes durable first, so the lookup of embeddings already paid for sees it;
            # only then may the outcomes kept for reuse be dropped (never in the middle of a page).
            self.flush()
            self.completed.clear()
            page = self._claim(page)
            known = self.outcomes.known_embeddings(self.model, {row.image_url for row in page})
            for row in page:
                url = row.image_url
                if url in self.waiting:
                    self.waiting[url].append(row)
                elif url in self.completed and self.completed[url].ok:
                    self._add(row, self.completed[url], reused=True)
                elif url in known and (row.image_updated_at is None or known[url].updated_at >= row.image_updated_at):
                    self._add(row, ImageOutcome(url, embedding=known[url].embedding), reused=True)
                else:
                    self.waiting[url] = [row]
                    yield url

    # -- results -------------------------------------------------------------------------------------------------

    def record(self, outcome: ImageOutcome) -> None:
        self.billed_seconds += outcome.predict_time
        self.completed[outcome.url] = outcome
        if outcome.adopted and outcome.url in self.waiting:
            self.counts["adopted"] += 1
        for index, row in enumerate(self.waiting.pop(outcome.url, [])):
            self._add(row, outcome, reused=index > 0)

    def _add(self, row: Any, outcome: ImageOutcome, reused: bool) -> None:
        self.buffer.append((row, outcome))
        if reused and outcome.ok:
            self.counts["reused"] += 1
        if len(self.buffer) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Make the buffered outcomes durable, then log them (the Dagster log and the plain file)."""
        if not self.buffer:
            return
        rows, lines = [], []
        for row, outcome in self.buffer:
            rows.append(self._change(row, outcome, lines))
        self.outcomes.record(rows)
        self.progress.write(lines)
        if lines:
            self.log.info("\n".join(lines))
        self.done += len(self.buffer)
        self.buffer.clear()
        self._report_progress()

    def _change(self, row: Any, outcome: ImageOutcome, lines: list[str]) -> dict[str, Any]:
        attempt = counts_as_attempt(outcome)
        change: dict[str, Any] = {
            "product_image_id": row.product_image_id,
            "model": self.model,
            "expected_url": row.image_url,
            "attempts": row.attempts + (1 if attempt else 0),
            "max_attempts": self.max_attempts,
            "prediction_id": outcome.prediction_id,
            "predict_time": outcome.predict_time,
            "embedding": None,
            "dimensions": None,
        }
        if outcome.ok:
            change.update(status=INDEXED, embedding=outcome.embedding, dimensions=len(outcome.embedding), error=None)
            self.counts[INDEXED] += 1
            lines.append(indexed_line(row.product_image_id, row.product_id))
            return change
        error = redact(outcome.error or "unknown error", self.secrets)
        if outcome.left_pending:
            change.update(status=PENDING, error=error)
            self.counts["left_pending"] += 1
            self.last_pending_reason = error
            return change
        change.update(status=FAILED, error=error)
        self.counts[FAILED] += 1
        retry = "will retry" if change["attempts"] < self.max_attempts else "gave up"
        lines.append(failed_line(row.product_image_id, f"{error} (attempt {change['attempts']}, {retry})"))
        return change

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now - self.last_progress < PROGRESS_EVERY_SECONDS and self.done < self.total:
            return
        self.last_progress = now
        rate = self.done / (now - self.started) if now > self.started else 0.0
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        self.log.info(f"progress: {self.done}/{self.total} images, {rate:.1f} images/s, about {eta} left")
