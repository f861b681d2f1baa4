"""Replicate's predictions: create (sync mode), poll, cancel, and find the ones already created.

Replicate has no idempotency key: a create that timed out or met a 5xx may still have started a paid prediction.
So before a create is sent again, and when a run follows an interrupted one, the account's predictions are
listed (`GET /v1/predictions`, newest first) and a prediction of the same model for the same input is taken
instead of paying again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode

from replicate_assets.replicate.errors import (
    ReplicateConfigError,
    ReplicateError,
    ReplicateUnavailableError,
    Stopped,
    TransientError,
)
from replicate_assets.replicate.models import ModelSpec, Prediction
from replicate_assets.replicate.ratelimit import CreateLimiter
from replicate_assets.replicate.transport import Transport, rate_headers

# How far before our own clock's "since" the list is read: Replicate's clock may differ from ours.
CLOCK_MARGIN = dt.timedelta(seconds=30)
# Replicate removes a prediction's input and output an hour after it ends: older ones cannot be taken over.
RETENTION = dt.timedelta(hours=1)
# What a found prediction is worth, best first, when one input has several.
PREFERENCE = {"succeeded": 0, "processing": 1, "starting": 1, "failed": 3, "canceled": 4, "aborted": 4}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Predictions:
    """Creates, polls, cancels and lists predictions of one model."""

    def __init__(
        self,
        transport: Transport,
        spec: ModelSpec,
        limiter: CreateLimiter,
        *,
        sync_wait_seconds: int = 5,
        timeout_seconds: float = 120.0,
    ):
        self.transport, self.spec, self.limiter = transport, spec, limiter
        self.sync_wait_seconds, self.timeout_seconds = sync_wait_seconds, timeout_seconds
        self.stats = transport.stats
        self.accepted = threading.Event()  # a create was accepted: the token and the credit work

    # -- create -----------------------------------------------------------------------------------------------

    def create(self, inputs: list[str], field: str = "image") -> Prediction | ReplicateError:
        """Create one prediction for `inputs` in sync mode.

        Returns the prediction (terminal, or incomplete to be polled), or the ReplicateError of an input Replicate
        rejects (422). A create that may have reached Replicate and failed is not blindly sent again: the list is
        read first, and a prediction found for the same input is returned instead.
        """
        body = self.spec.create_body(inputs, field)
        headers = {"Prefer": f"wait={self.sync_wait_seconds}"}
        started = utcnow()
        failures = 0
        while True:
            try:
                response = self.transport.request(
                    "POST",
                    self.spec.create_path(),
                    json=body,
                    headers=headers,
                    limiter=self.limiter,
                    retry_sent=False,
                    timeout=self.transport.read_timeout + self.sync_wait_seconds,
                )
            except TransientError:  # it may have started a prediction: look before sending it again
                failures += 1
                self.transport.sleep(self.transport.backoff * 2 ** (failures - 1))
                found = self.find(set(inputs), started)
                if len({found[i].id for i in inputs if i in found}) == 1 and all(i in found for i in inputs):
                    self.stats.add("adopted")
                    return found[inputs[0]]
                if failures >= self.transport.max_attempts:
                    raise ReplicateUnavailableError(
                        f"Replicate at {self.transport.where()} failed {failures} creates in a row: the images stay "
                        "pending; check the network or Replicate's status page"
                    ) from None
                self.stats.add("possible_duplicate_creates")  # sent again: the lookup may have missed one
                continue
            except ReplicateConfigError:
                self.stats.add("refused")
                raise
            except ReplicateUnavailableError:
                raise
            except ReplicateError as err:
                if err.status == 422:
                    self.accepted.set()  # the account works: this input is what Replicate refused
                return err
            self.stats.add("creates")
            self.accepted.set()
            self.limiter.accepted(*rate_headers(response))
            return Prediction(response.json())

    # -- wait, cancel ---------------------------------------------------------------------------------------------

    def wait(self, prediction: Prediction, timeout: float | None = None) -> Prediction | None:
        """Poll an incomplete prediction with backoff until it ends.

        Past the deadline it is canceled and returned failed; returns None when the run is told to stop (the
        prediction goes on at Replicate and a later run takes it over).
        """
        deadline = time.monotonic() + (self.timeout_seconds if timeout is None else timeout)
        delay = 0.25
        while not prediction.terminal:
            if prediction.id is None:
                return Prediction(
                    {"status": "failed", "error": f"malformed answer: a {prediction.status!r} prediction without an id"}
                )
            if time.monotonic() + delay > deadline:
                self.cancel(prediction.id)
                error = f"prediction {prediction.id} did not finish within {self.timeout_seconds:g} s; it was canceled"
                return Prediction({**prediction.raw, "status": "failed", "error": error})
            try:
                self.transport.sleep(delay)
            except Stopped:
                return None
            delay = min(delay * 2, 5.0)
            self.stats.add("polls")
            try:
                response = self.transport.request("GET", prediction.get_url or f"/predictions/{prediction.id}")
            except TransientError:
                continue  # it goes on at Replicate: keep polling until the deadline
            except Stopped:
                return None
            prediction = Prediction(response.json())
        return prediction

    def cancel(self, prediction_id: str) -> None:
        with contextlib.suppress(ReplicateError, Stopped):  # best effort: it times out at Replicate anyway
            self.transport.request("POST", f"/predictions/{prediction_id}/cancel")

    # -- find what was already created -----------------------------------------------------------------------------

    def listed(self, since: dt.datetime) -> Iterator[Prediction]:
        """The account's predictions created after `since` (less a clock margin), newest first, page by page."""
        since = max(since, utcnow() - RETENTION) - CLOCK_MARGIN
        stamp = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        url: str | None = "/predictions?" + urlencode({"created_after": stamp})
        while url:
            self.stats.add("list_requests")
            page = self.transport.request("GET", url).json()
            for item in page.get("results") or []:
                if not isinstance(item, dict):
                    continue
                prediction = Prediction(item)
                created = prediction.created_at
                if created is not None and created < since:
                    return  # older than asked for: the API may not know created_after
                yield prediction
            url = page.get("next") if isinstance(page.get("next"), str) else None

    def find(self, inputs: set[str], since: dt.datetime) -> dict[str, Prediction]:
        """The best prediction of this model for each input found among those created since `since`."""
        found: dict[str, Prediction] = {}
        if not inputs:
            return found
        for prediction in self.listed(since):
            if not self.spec.made(prediction):
                continue
            rank = PREFERENCE.get(prediction.status or "", 2)
            for item in self.spec.inputs_of(prediction.input):
                if item in inputs and (item not in found or rank < PREFERENCE.get(found[item].status or "", 2)):
                    found[item] = prediction
        return found


def group_by_prediction(found: dict[str, Prediction], urls: Iterable[str]) -> list[tuple[Prediction, list[str]]]:
    """The found predictions with the URLs each answers, in first-seen order."""
    groups: dict[str, tuple[Prediction, list[str]]] = {}
    for url in urls:
        prediction = found.get(url)
        if prediction is not None:
            groups.setdefault(prediction.id or url, (prediction, []))[1].append(url)
    return list(groups.values())
