"""What one image needs, from its shop row, its outcome and its published embedding: a pure decision."""

from __future__ import annotations

import dataclasses
from typing import Any

from replicate_assets.db import FAILED, INDEXED, PENDING, as_instant
from replicate_assets.urls import resolve_image_url, url_hash

TO_EMBED, UP_TO_DATE, UNUSABLE, GAVE_UP = PENDING, "up_to_date", "unusable", "gave_up"


@dataclasses.dataclass(frozen=True)
class Decision:
    """A verdict, with the outcome row to insert (`new`) or to reset (`reset`, carrying `expected_*`), if any."""

    verdict: str
    new: dict[str, Any] | None = None
    reset: dict[str, Any] | None = None

    @property
    def change(self) -> dict[str, Any] | None:
        return self.new or self.reset


def classify(row: Any, model: str, image_base_url: str | None, max_attempts: int) -> Decision:
    """Decide what one image needs.

    `row` has the image (id, product_id, path, updated_at, product_found), its outcome for `model` (status,
    outcome_url, image_updated_at, attempts) and its product_embeddings row (embedding_model, embedding_url,
    embedding_updated_at). Unusable images (a path that cannot be sent, a product that does not exist) fail at
    once, with no URL stored, and are never sent; they are looked at again when their row changes.
    """
    url, reason = resolve_image_url(row.path, image_base_url)
    if row.product_found is None:
        url, reason = None, f"orphan image: product #{row.product_id} does not exist (no foreign key kept it)"
    updated = as_instant(row.updated_at)
    change = {
        "product_image_id": row.id,
        "model": model,
        "product_id": row.product_id,
        "image_url": url,
        "url_hash": url_hash(url) if url else None,
        "image_updated_at": updated,
        "embedding": None,
        "dimensions": None,
        "predict_time": None,
        "prediction_id": None,
        "sent_at": None,
    }
    if reason:
        change.update(status=FAILED, error=reason, attempts=0)
    else:
        change.update(status=PENDING, error=None, attempts=0)
    if row.status is None:
        published = (
            url
            and row.embedding_model == model
            and row.embedding_url == url
            and as_instant(row.embedding_updated_at) is not None
            and updated is not None
            and as_instant(row.embedding_updated_at) >= updated
        )
        if published:
            return Decision(UP_TO_DATE)  # embedded before this pipeline kept outcomes
        return Decision(UNUSABLE if reason else TO_EMBED, new=change)
    expected = {"expected_status": row.status, "expected_url": row.outcome_url, "expected_attempts": row.attempts}
    same_image = row.outcome_url == url and as_instant(row.image_updated_at) == updated
    if not same_image:
        return Decision(UNUSABLE if reason else TO_EMBED, reset={**change, **expected})
    if row.status == INDEXED:
        return Decision(UP_TO_DATE)
    if row.status == PENDING:
        return Decision(TO_EMBED)
    if url is None or row.attempts >= max_attempts:
        return Decision(GAVE_UP)
    retry = {**change, "attempts": row.attempts, **expected}
    return Decision(TO_EMBED, reset=retry)
