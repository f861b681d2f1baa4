"""What one image needs, decided from its row, its outcome and its published embedding; and what counts as an
attempt of an image."""

import datetime as dt
from types import SimpleNamespace

from replicate_assets.pipeline.classify import GAVE_UP, TO_EMBED, UNUSABLE, UP_TO_DATE, classify
from replicate_assets.pipeline.embedding_run import counts_as_attempt
from replicate_assets.replicate import ImageOutcome

BASE = "https://shop.example/storage"
STAMP = dt.datetime(2025, 1, 15, 10, 30, 45)


def row(**fields):
    image = {"id": 7, "product_id": 3, "path": "p/7.png", "updated_at": "2025-01-15 10:30:45", "product_found": 3}
    outcome = {"status": None, "outcome_url": None, "image_updated_at": None, "attempts": 0}
    published = {"embedding_model": None, "embedding_url": None, "embedding_updated_at": None}
    return SimpleNamespace(**{**image, **outcome, **published, **fields})


def test_a_new_image_is_to_embed():
    decision = classify(row(), "openai/clip", BASE, 3)
    assert decision.verdict == TO_EMBED and decision.new["image_url"] == f"{BASE}/p/7.png"
    assert decision.new["image_updated_at"] == STAMP and decision.new["status"] == "pending"


def test_an_indexed_image_with_the_same_row_is_up_to_date_whatever_its_timestamp_type():
    aware = dt.datetime(2025, 1, 15, 11, 30, 45, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # the same instant
    done = row(status="indexed", outcome_url=f"{BASE}/p/7.png", image_updated_at=STAMP, updated_at=aware)
    assert classify(done, "openai/clip", BASE, 3).verdict == UP_TO_DATE


def test_a_changed_image_is_reset_only_if_still_as_read():
    changed = row(status="indexed", outcome_url=f"{BASE}/p/old.png", image_updated_at=STAMP, attempts=1)
    decision = classify(changed, "openai/clip", BASE, 3)
    assert decision.verdict == TO_EMBED and decision.new is None
    assert decision.reset["expected_url"] == f"{BASE}/p/old.png" and decision.reset["expected_attempts"] == 1


def test_failures_are_retried_until_the_attempts_are_used_up():
    failed = {"status": "failed", "outcome_url": f"{BASE}/p/7.png", "image_updated_at": STAMP}
    assert classify(row(**failed, attempts=2), "openai/clip", BASE, 3).verdict == TO_EMBED
    assert classify(row(**failed, attempts=3), "openai/clip", BASE, 3).verdict == GAVE_UP


def test_unusable_images_fail_at_once_and_are_never_sent():
    assert classify(row(path=None), "openai/clip", BASE, 3).new["error"] == "invalid image path: the path is null"
    orphan = classify(row(product_found=None), "openai/clip", BASE, 3)
    assert orphan.verdict == UNUSABLE and orphan.new["image_url"] is None
    assert orphan.new["error"].startswith("orphan image: product #3 does not exist")
    given_up = row(status="failed", path=None, outcome_url=None, image_updated_at=STAMP)
    assert classify(given_up, "openai/clip", BASE, 3).verdict == GAVE_UP


def test_an_embedding_published_before_outcomes_were_kept_is_not_paid_again():
    published = row(embedding_model="openai/clip", embedding_url=f"{BASE}/p/7.png", embedding_updated_at=STAMP)
    assert classify(published, "openai/clip", BASE, 3).verdict == UP_TO_DATE


def test_what_counts_as_an_attempt():
    assert counts_as_attempt(ImageOutcome("u", embedding=[1.0], prediction_id="p"))
    assert counts_as_attempt(ImageOutcome("u", error="HTTP 404", prediction_id="p"))
    assert counts_as_attempt(ImageOutcome("u", error="422 input"))  # Replicate refused this image
    assert not counts_as_attempt(ImageOutcome("u", embedding=[1.0]))  # reused: paid for before
    assert not counts_as_attempt(ImageOutcome("u", error="stopped", left_pending=True, prediction_id="p"))
