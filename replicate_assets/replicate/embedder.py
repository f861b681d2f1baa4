"""Many images at once: a pool of threads, batches for clip-features, the first create alone, stop and drain.

`Embedder.embed` turns image URLs into `ImageOutcome`s, `max_in_flight` requests at a time; it never raises for
one bad image. It raises ReplicateConfigError (token, credit, model) or ReplicateUnavailableError (the API is
down or not Replicate's); outcomes already yielded stay valid, and `drain` hands over the ones still in flight.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import TYPE_CHECKING

from replicate_assets.replicate.errors import ReplicateError, Stopped
from replicate_assets.replicate.models import ImageOutcome, Prediction, load_failures, read_output
from replicate_assets.replicate.predictions import group_by_prediction

if TYPE_CHECKING:
    from replicate_assets.replicate.client import ReplicateClient

STOPPED = "the run was stopped before this image was sent"


class Embedder:
    """One run's worth of embedding work against a client; use it as a context manager."""

    def __init__(self, client: ReplicateClient):
        self.client = client
        self.predictions = client.predictions
        self.spec = client.spec
        self.pool = ThreadPoolExecutor(client.max_in_flight, thread_name_prefix="replicate")
        self.running: set[Future] = set()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running:  # left by an error or an interrupt: threads end their request and send nothing more
            self.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        """Send nothing more: threads finish the request they are in and stop polling."""
        self.client.stop_event.set()

    def drain(self, timeout: float) -> Iterator[ImageOutcome]:
        """The outcomes of work still in flight that ends within `timeout` seconds (after `stop`, or an error)."""
        if not self.running:
            return
        done, self.running = wait(self.running, timeout=timeout)
        for future in done:
            try:
                yield from future.result()
            except (ReplicateError, Stopped):
                continue

    # -- new predictions -----------------------------------------------------------------------------------------

    def embed(self, urls: Iterable[str]) -> Iterator[ImageOutcome]:
        """Yield one outcome per distinct URL, in completion order; `urls` is read lazily.

        Until Replicate has accepted one create, one request is in flight: a bad token or an empty account costs
        one refused request, not one per thread.
        """
        size = self.client.batch_size if self.spec.batched else 1
        units = _batches(urls, size)
        exhausted = False
        while self.running or not exhausted:
            accepted = self.predictions.accepted.is_set()
            width = self.client.max_in_flight if accepted else 1
            while not exhausted and len(self.running) < width and not self.client.stop_event.is_set():
                unit = next(units, None)
                if unit is None:
                    exhausted = True
                else:
                    self.running.add(self.pool.submit(self._embed_unit, unit))
            if not self.running:
                return
            done, _ = wait(self.running, timeout=None if accepted else 0.05, return_when=FIRST_COMPLETED)
            for future in done:
                self.running.discard(future)
                yield from future.result()

    def _embed_unit(self, urls: list[str]) -> list[ImageOutcome]:
        """Embed one prediction's worth of URLs; a failed batch is split to isolate the bad images."""
        try:
            outcomes, prediction = self._predict(urls)
        except Stopped:
            return [ImageOutcome(u, error=STOPPED, left_pending=True) for u in urls]
        if prediction is None or prediction.status != "failed" or not self.spec.batched:
            return outcomes
        # One image the model cannot load fails a whole clip-features batch. Fail the ones it names (in its logs
        # or its error) and send the rest again; when it names none, halve the batch until the bad ones stand alone.
        dead = load_failures(prediction, urls)
        if len(urls) == 1:
            return [replace(o, error=dead.get(o.url, o.error)) for o in outcomes]
        if dead:
            rest = [u for u in urls if u not in dead]
            split = [ImageOutcome(u, error=why) for u, why in dead.items()] + (self._embed_unit(rest) if rest else [])
        else:
            middle = len(urls) // 2
            split = self._embed_unit(urls[:middle]) + self._embed_unit(urls[middle:])
        split[0].predict_time += sum(o.predict_time for o in outcomes)  # the failed batch was billed too
        split[0].prediction_id = split[0].prediction_id or prediction.id
        return split

    def _predict(self, urls: list[str], retried: bool = False) -> tuple[list[ImageOutcome], Prediction | None]:
        """One prediction for `urls`, and the prediction it ended with (None when Replicate refused the input or
        the run stopped); canceled, aborted and malformed answers are tried once more."""
        created = self.predictions.create(urls)
        if isinstance(created, ReplicateError):  # Replicate refused this input (422)
            return [ImageOutcome(u, error=str(created)) for u in urls], None
        prediction = created if created.terminal else self.predictions.wait(created)
        if prediction is None:
            why = f"the run was stopped while prediction {created.id} ran; the next run takes it over"
            return [ImageOutcome(u, error=why, left_pending=True, prediction_id=created.id) for u in urls], None
        if prediction.status in ("canceled", "aborted"):
            if retried:
                outcomes = [ImageOutcome(u, error=f"{prediction.failure()}, twice") for u in urls]
            else:
                outcomes, _ = self._predict(urls, retried=True)
        else:
            outcomes = _outcomes(prediction, urls, self.spec)
            malformed = [o.url for o in outcomes if not o.ok and prediction.status == "succeeded"]
            if malformed and not retried:
                again = {o.url: o for o in self._predict(malformed, retried=True)[0]}
                outcomes = [again.get(o.url, o) for o in outcomes]
        return _billed(outcomes, prediction), prediction

    # -- predictions an earlier attempt created ------------------------------------------------------------------

    def resume(self, urls: Iterable[str], since: dt.datetime) -> Iterator[ImageOutcome]:
        """Take over the predictions an interrupted attempt created for `urls` since `since`.

        Succeeded ones give their embeddings, running ones are polled to their end, failed ones fail their image
        (an attempt). Yields outcomes for the URLs taken over only; the others were never created (or their
        prediction is gone) and are left to `embed`. Costs list requests, never a create.
        """
        urls = list(dict.fromkeys(urls))
        found = self.predictions.find(set(urls), since)
        waiting: set[Future] = set()
        for prediction, group in group_by_prediction(found, urls):
            if prediction.terminal:
                yield from self._adopt(prediction, group)
            else:
                waiting.add(self.pool.submit(self._follow, prediction, group))
        self.running |= waiting
        while waiting:
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for future in done:
                self.running.discard(future)
                yield from future.result()

    def _follow(self, prediction: Prediction, urls: list[str]) -> list[ImageOutcome]:
        ended = self.predictions.wait(prediction)
        if ended is None:
            why = f"the run was stopped while prediction {prediction.id} ran; the next run takes it over"
            return [ImageOutcome(u, error=why, left_pending=True, prediction_id=prediction.id) for u in urls]
        return self._adopt(ended, urls)

    def _adopt(self, prediction: Prediction, urls: list[str]) -> list[ImageOutcome]:
        """Outcomes from a prediction found, not created: a failure of a batch fails only the URLs it names."""
        if prediction.raw.get("data_removed") and prediction.status == "succeeded":
            return []  # its output is gone: the images must be sent again
        if self.spec.batched and prediction.status == "failed":
            dead = load_failures(prediction, urls)  # the others were good: they are sent again
            if len(urls) > 1 or dead:
                outcomes = [ImageOutcome(u, error=why) for u, why in dead.items()]
                return [replace(o, adopted=True) for o in _billed(outcomes, prediction)]
        outcomes = _billed(_outcomes(prediction, urls, self.spec), prediction)
        for outcome in outcomes:
            outcome.adopted = True
        return outcomes


def _outcomes(prediction: Prediction, urls: list[str], spec) -> list[ImageOutcome]:
    if prediction.status == "succeeded":
        return read_output(prediction, urls, spec)
    return [ImageOutcome(u, error=prediction.failure()) for u in urls]


def _billed(outcomes: list[ImageOutcome], prediction: Prediction) -> list[ImageOutcome]:
    """A prediction is billed once, to its first image; every outcome names it."""
    if outcomes:
        outcomes[0].predict_time += prediction.predict_time
    for outcome in outcomes:
        outcome.prediction_id = outcome.prediction_id or prediction.id
    return outcomes


def _batches(urls: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for url in urls:
        batch.append(url)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
