"""The emulator's state and the model's work: predictions created, settled, listed, canceled and expired."""

from __future__ import annotations

import random
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from replicate_assets.replicate.ratelimit import TokenBucket
from replicate_assets.testing.emulator.api import Handler
from replicate_assets.testing.emulator.faults import NO_FAULTS, PREDICTION_FAULTS, Faults
from replicate_assets.testing.emulator.model import Model
from replicate_assets.testing.emulator.predictions import Prediction, embedding_for, iso


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that lets a client go away (a killed run, a timed-out request) without a traceback,
    as a production server does; any other error is reported as usual."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class Emulator:
    """Replicate's API on 127.0.0.1. Use as a context manager, or `start()` / `stop()`; `base_url` ends in /v1.

    latency: seconds each prediction runs (plus up to `jitter`); creates_per_minute: the create rate limit
    (None: unlimited) with bursts of `burst`; token: the only token accepted (None: any non-empty token);
    retention: seconds after which a prediction's input and output are removed (`data_removed`), an hour as on
    Replicate. log_requests=False keeps no `requests` log (tests read it to count creates per image).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        creates_per_minute: float | None = None,
        burst: int = 10,
        token: str | None = None,
        predict_time: float = 0.0152,
        seed: int = 0,
        retention: float = 3600.0,
        log_requests: bool = True,
        embed: Callable[[bytes], list[float]] = embedding_for,
    ):
        self.latency, self.jitter, self.token, self.predict_time = latency, jitter, token, predict_time
        self.retention, self.log_requests = retention, log_requests
        self.model = Model(embed, predict_time, self)
        self.limiter = TokenBucket(creates_per_minute / 60.0, burst) if creates_per_minute else None
        self.predictions: dict[str, Prediction] = {}
        self.ordered: list[Prediction] = []  # in creation order: the list endpoint reads it newest first
        self.unremoved: deque[Prediction] = deque()  # in creation order, the predictions still holding data
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.faults: dict[str, Faults] = {}  # by model name; "*" for every model
        self.random = random.Random(seed)
        self.throttled_until = 0.0
        self.create_requests = 0  # create requests received, whatever their answer
        self.in_flight = 0  # create requests being answered now ...
        self.max_in_flight = 0  # ... and the most at once
        self.server = QuietServer((host, port), Handler)
        self.server.emulator = self  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> Emulator:
        self.thread = threading.Thread(target=self.server.serve_forever, name="replicate-emulator", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------------------------------

    def set_faults(self, faults: Faults | None, model: str = "*") -> None:
        """Inject `faults` for `model` (or every model); None clears them."""
        with self.lock:
            if faults is None:
                self.faults.pop(model, None)
            else:
                self.faults[model] = faults
            self.throttled_until = 0.0

    def faults_for(self, model: str | None, index: int | None = None) -> Faults:
        """The faults in force for `model` at the create request numbered `index` (default: the next one)."""
        faults = self.faults.get(model or "", self.faults.get("*", NO_FAULTS))
        received = self.create_requests if index is None else index
        if received < faults.start_after or (faults.stop_after is not None and received >= faults.stop_after):
            return NO_FAULTS
        return faults

    def draw(self, faults: Faults, names: tuple[str, ...]) -> str | None:
        """Pick at most one of the named faults, each with its rate."""
        with self.lock:
            point = self.random.random()
        for name in names:
            point -= getattr(faults, name)
            if point < 0:
                return name
        return None

    def throttled(self, faults: Faults) -> float:
        """Seconds left in a 429 burst (starting one with the throttle rate), or 0."""
        now = time.monotonic()
        with self.lock:
            if now < self.throttled_until:
                return self.throttled_until - now
            if faults.throttle and self.random.random() < faults.throttle:
                self.throttled_until = now + faults.retry_after
                return float(faults.retry_after)
        return 0.0

    # -- what tests read ---------------------------------------------------------------------------------------------

    def creates(self) -> list[dict[str, Any]]:
        """The create requests received (answered or not), each with the inputs it carried."""
        with self.lock:
            return [r for r in self.requests if r["create"]]

    def creates_per_input(self) -> dict[str, int]:
        """Accepted creates per input: more than 1 for an image means it was paid for twice."""
        counts: dict[str, int] = {}
        for request in self.creates():
            if request["status"] < 300:
                for item in request["inputs"]:
                    counts[item] = counts.get(item, 0) + 1
        return counts

    # -- predictions ---------------------------------------------------------------------------------------------------

    def create(
        self, model: str, version: str, payload: dict[str, Any], wait: float | None, faults: Faults = NO_FAULTS
    ) -> Prediction:
        fault = self.draw(faults, PREDICTION_FAULTS)
        with self.lock:
            sparse = bool(faults.sparse) and self.random.random() < faults.sparse
        latency = self.latency + (self.jitter * (secrets.randbelow(1000) / 1000) if self.jitter else 0.0)
        if fault == "slow":
            latency = max(latency, faults.slow_seconds)
        prediction = Prediction(
            id=secrets.token_hex(13),
            model=model,
            version=version,
            input=payload,
            ready_at=time.monotonic() + latency,
            fault=fault,
            sparse=sparse,
        )
        self.remove_expired_data()
        with self.lock:
            prediction.index = len(self.ordered)
            prediction.created = max(prediction.created, self.ordered[-1].created if self.ordered else 0.0)
            self.predictions[prediction.id] = prediction
            self.ordered.append(prediction)
            self.unremoved.append(prediction)
        if wait:
            time.sleep(max(0.0, min(wait, prediction.ready_at - time.monotonic())))
        self.settle(prediction)
        return prediction

    def settle(self, prediction: Prediction) -> None:
        """Bring a prediction up to date: started, finished (the model runs once), data removed."""
        with prediction.lock:
            now = time.monotonic()
            if prediction.fault == "stuck" and prediction.status != "canceled":
                prediction.status = "booting"  # a status no client knows
            elif prediction.running:
                if now >= prediction.ready_at:
                    self.model.run(prediction)
                elif prediction.status == "starting":
                    prediction.status, prediction.started_at = "processing", iso(time.time())
            if now >= prediction.ready_at + self.retention and not prediction.running:
                prediction.input, prediction.output, prediction.data_removed = {}, None, True
                prediction.logs = ""

    def cancel(self, prediction: Prediction) -> None:
        with prediction.lock:
            if prediction.running or prediction.status == "booting":
                prediction.status, prediction.completed_at = "canceled", iso(time.time())

    def remove_expired_data(self) -> None:
        """Remove the input and output of every finished prediction older than the retention."""
        now = time.monotonic()
        while True:
            with self.lock:
                if not self.unremoved or self.unremoved[0].ready_at + self.retention > now:
                    return
                prediction = self.unremoved.popleft()
            if prediction.running:
                continue  # never asked for again: `settle` runs it, and removes its data, if anyone does
            self.settle(prediction)
