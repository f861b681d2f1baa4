"""Replicate's HTTP API, spoken directly with `requests`: predictions, polling, rate limits, retries.

`ReplicateClient.embed_images` turns image URLs into CLIP embeddings, one `ImageOutcome` per URL, and never
raises for one bad image; it raises `ReplicateConfigError` only when no image can succeed (bad token, no
credit, unknown model), so the caller stops the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import requests
from pydantic import PrivateAttr

from replicate_assets.settings import DEFAULT_BASE_URL, DEFAULT_MODEL, Settings

DIMENSIONS = 768
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to call one CLIP model and read its output."""

    name: str
    version: str | None  # None: an official model, called through its model path
    batched: bool  # takes many newline-separated inputs per prediction
    usd_per_second: float  # the hardware's price, for cost estimates

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


MODELS = {
    "openai/clip": ModelSpec("openai/clip", None, batched=False, usd_per_second=0.000975),  # L40S
    "andreasjansson/clip-features": ModelSpec(
        "andreasjansson/clip-features",
        "75b33f253f7714a281ad3e9b28f63e3232d583716ef6718f2e46641077ea040a",
        batched=True,
        usd_per_second=0.000225,  # T4
    ),
    "krthr/clip-embeddings": ModelSpec(
        "krthr/clip-embeddings",
        "1c0371070cb827ec3c7f2f28adcdde54b50dcd239aa6faea0bc98b174ef03fb4",
        batched=False,
        usd_per_second=0.000225,  # hardware not published; priced as a T4 (inferred)
    ),
}


def model_spec(model: str) -> ModelSpec:
    """Parse REPLICATE_MODEL (`owner/name` or `owner/name:version`); raises ReplicateConfigError if unknown."""
    name, _, version = model.partition(":")
    spec = MODELS.get(name)
    if spec is None:
        raise ReplicateConfigError(
            f"REPLICATE_MODEL={model!r} is not a supported CLIP model: use one of {', '.join(MODELS)}"
        )
    return dataclasses.replace(spec, version=version) if version else spec


class ReplicateError(Exception):
    """An error answer of the API, carrying its RFC 7807 problem-details fields."""

    def __init__(self, message: str, status: int | None = None, title: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.status, self.title, self.detail = status, title, detail


class ReplicateConfigError(ReplicateError):
    """No image can succeed (token, credit, model): stop the run; the message says what to fix."""


class TransientError(ReplicateError):
    """Replicate or the network failed in a way that may pass (5xx, reset, timeout)."""


@dataclasses.dataclass
class ImageOutcome:
    """What became of one image URL: an embedding, or the reason there is none."""

    url: str
    embedding: list[float] | None = None
    error: str | None = None
    transient: bool = False  # the error may pass: worth another attempt later
    predict_time: float = 0.0  # seconds billed, this image's share
    prediction_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclasses.dataclass
class Stats:
    """Counters over the client's life, for asset metadata."""

    creates: int = 0
    polls: int = 0
    throttled: int = 0  # 429 answers
    transient_errors: int = 0
    possible_duplicate_creates: int = 0  # creates that timed out or failed in a way that may have started one


class RateLimiter:
    """A token bucket shared by every thread: at most `per_minute` acquisitions a minute, bursts of one second."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, math.ceil(self.rate)))
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait_for = (1 - self.tokens) / self.rate
            time.sleep(wait_for)

    def pause(self, seconds: float) -> None:
        """Everyone waits: Replicate said the account is throttled."""
        with self.lock:
            self.tokens = min(self.tokens, 0.0) - seconds * self.rate
            self.updated = time.monotonic()


class ReplicateClient(dg.ConfigurableResource):
    """Replicate's HTTP API for one CLIP model. The token is used in the Authorization header only."""

    api_token: str | None = None
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    max_in_flight: int = 16
    max_predictions_per_minute: int = 600
    sync_wait_seconds: int = 5
    prediction_timeout_seconds: float = 120.0
    read_timeout_seconds: float = 15.0  # beyond the sync wait, for creates
    max_request_attempts: int = 4
    backoff_seconds: float = 1.0
    batch_size: int = 50
    _session: requests.Session | None = PrivateAttr(default=None)
    _limiter: RateLimiter | None = PrivateAttr(default=None)
    _stats: Stats = PrivateAttr(default_factory=Stats)

    @classmethod
    def from_settings(cls, settings: Settings, api_token: Any) -> ReplicateClient:
        return cls(
            api_token=api_token,
            base_url=settings.replicate_base_url,
            model=settings.replicate_model,
            max_in_flight=settings.max_in_flight,
            max_predictions_per_minute=settings.max_predictions_per_minute,
            batch_size=settings.batch_size,
            prediction_timeout_seconds=settings.prediction_timeout_seconds,
        )

    # -- public -------------------------------------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    @property
    def stats(self) -> Stats:
        return self._stats

    def test_connection(self) -> dict[str, Any]:
        """Check token and model without running a prediction: returns the account and model documents."""
        account = self._request("GET", "/account").json()
        owner, name = self.spec.name.split("/")
        model = self._request("GET", f"/models/{owner}/{name}").json()
        return {"account": account, "model": model}

    def embed_images(self, urls: Iterable[str]) -> Iterator[ImageOutcome]:
        """Yield one outcome per distinct URL, in completion order, keeping `max_in_flight` requests busy.

        `urls` is consumed lazily, so a caller can stream a large window. Raises ReplicateConfigError when the
        token, credit or model is wrong; outcomes already yielded stay valid.
        """
        spec = self.spec
        units = _batches(urls, self.batch_size) if spec.batched else ([u] for u in urls)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="replicate") as pool:
            running: set[Future] = set()
            units = iter(units)
            exhausted = False
            try:
                while running or not exhausted:
                    while not exhausted and len(running) < self.max_in_flight:
                        unit = next(units, None)
                        if unit is None:
                            exhausted = True
                        else:
                            running.add(pool.submit(self._embed_unit, unit))
                    if not running:
                        break
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield from future.result()
            finally:
                for future in running:
                    future.cancel()

    # -- one prediction ---------------------------------------------------------------------------------------

    def _embed_unit(self, urls: list[str]) -> list[ImageOutcome]:
        """Embed one prediction's worth of URLs; a failed batch is split to isolate the bad images."""
        try:
            outcomes = self._predict(urls)
        except TransientError as err:
            return [ImageOutcome(u, error=str(err), transient=True) for u in urls]
        errors = {o.error for o in outcomes}
        if len(urls) > 1 and len(errors) == 1 and None not in errors:
            # One dead URL fails a whole clip-features batch. Drop the URLs the error names and send the
            # rest again; if it names none, halve the batch until the bad ones stand alone.
            error = errors.pop() or ""
            named = [u for u in urls if re.search(re.escape(u) + r"(?=$|[\s:'\",)])", error)]
            if named:
                rest = [u for u in urls if u not in named]
                split = [ImageOutcome(u, error=error) for u in named] + (self._embed_unit(rest) if rest else [])
            else:
                middle = len(urls) // 2
                split = self._embed_unit(urls[:middle]) + self._embed_unit(urls[middle:])
            split[0].predict_time += sum(o.predict_time for o in outcomes)  # the failed batch was billed too
            return split
        return outcomes

    def _predict(self, urls: list[str], retried: bool = False) -> list[ImageOutcome]:
        """One prediction for `urls`; canceled, aborted and malformed answers are tried once more."""
        prediction = self._create(urls)
        if isinstance(prediction, list):
            return prediction
        prediction = self._wait_until_terminal(prediction)
        status, prediction_id = prediction.get("status"), prediction.get("id")
        if status in ("canceled", "aborted"):
            if retried:
                outcomes = [ImageOutcome(u, error=f"prediction {prediction_id} was {status}, twice") for u in urls]
            else:
                outcomes = self._predict(urls, retried=True)
        elif status != "succeeded":
            reason = prediction.get("error") or f"prediction {prediction_id} ended {status}"
            outcomes = [ImageOutcome(u, error=str(reason)) for u in urls]
        else:
            outcomes = _read_output(prediction, urls, self.spec)
            malformed = [o.url for o in outcomes if not o.ok]
            if malformed and not retried:
                again = {o.url: o for o in self._predict(malformed, retried=True)}
                outcomes = [again.get(o.url, o) for o in outcomes]
        billed = _predict_time(prediction)
        outcomes[0].predict_time += billed  # a prediction is billed once, to its first image
        for outcome in outcomes:
            outcome.prediction_id = outcome.prediction_id or prediction_id
        return outcomes

    def _create(self, urls: list[str]) -> dict[str, Any] | list[ImageOutcome]:
        """Create a prediction (sync mode); an input Replicate rejects fails its images, other errors raise."""
        spec = self.spec
        if spec.batched:
            body: dict[str, Any] = {"input": {"inputs": "\n".join(urls)}}
        else:
            body = {"input": {"image": urls[0]}}
        if spec.version:
            path = "/predictions"
            body["version"] = spec.reference
        else:
            path = f"/models/{spec.name}/predictions"
        self._get_limiter().acquire()
        try:
            response = self._request(
                "POST", path, json=body, create=True, headers={"Prefer": f"wait={self.sync_wait_seconds}"}
            )
        except ReplicateError as err:
            if isinstance(err, (ReplicateConfigError, TransientError)):
                raise
            return [ImageOutcome(u, error=str(err)) for u in urls]
        return _json_object(response)

    def _wait_until_terminal(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """Poll an incomplete prediction with backoff; past the deadline cancel it and report it failed."""
        deadline = time.monotonic() + self.prediction_timeout_seconds
        delay = 0.25
        while prediction.get("status") not in TERMINAL:
            prediction_id = prediction.get("id")
            if not prediction_id:
                return {
                    "status": "failed",
                    "error": f"malformed answer: a {prediction.get('status')!r} prediction without an id",
                }
            if time.monotonic() + delay > deadline:
                self._cancel(prediction_id)
                return {
                    **prediction,
                    "status": "failed",
                    "error": f"prediction {prediction_id} did not finish within "
                    f"{self.prediction_timeout_seconds:g} s; it was canceled",
                }
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            get_url = (prediction.get("urls") or {}).get("get") or f"{self.base_url}/predictions/{prediction_id}"
            self._stats.polls += 1
            try:
                prediction = _json_object(self._request("GET", get_url))
            except TransientError:
                continue  # the prediction goes on on Replicate's side: keep polling until the deadline
        return prediction

    def _cancel(self, prediction_id: str) -> None:
        with contextlib.suppress(ReplicateError):  # best effort: it times out on Replicate's side anyway
            self._request("POST", f"/predictions/{prediction_id}/cancel")

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _get_session(self) -> requests.Session:
        if self._session is None:
            if not self.api_token:
                raise ReplicateConfigError(
                    "REPLICATE_API_TOKEN is not set: create a token at replicate.com/account/api-tokens and export it"
                )
            parts = urlsplit(self.base_url)
            if parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
                raise ReplicateConfigError(
                    f"REPLICATE_BASE_URL={self.base_url} is plain http: the token is only sent over https "
                    "(or to a loopback emulator)"
                )
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=self.max_in_flight + 2)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update({"Authorization": f"Bearer {self.api_token}", "User-Agent": "replicate_assets/0.1"})
            self._session = session
        return self._session

    def _get_limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(self.max_predictions_per_minute)
        return self._limiter

    def _request(self, method: str, path: str, *, create: bool = False, **kwargs: Any) -> requests.Response:
        """Send one request; retry 429 (after retry_after) and transient faults (backoff with jitter, bounded)."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        read_timeout = self.read_timeout_seconds + (self.sync_wait_seconds if create else 0)
        session = self._get_session()
        failures = 0
        while True:
            try:
                response = session.request(method, url, timeout=(10, read_timeout), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as err:
                if create and not isinstance(err, requests.exceptions.ConnectTimeout):
                    self._stats.possible_duplicate_creates += 1  # it may have reached Replicate
                failure = TransientError(f"{method} {_path_of(url)} failed: {type(err).__name__}")
            else:
                if response.status_code < 400:
                    if create:
                        self._stats.creates += 1
                    return response
                if response.status_code == 429:
                    self._stats.throttled += 1
                    wait_for = _retry_after(response) or self.backoff_seconds * 2 ** min(failures, 5)
                    self._get_limiter().pause(wait_for)
                    time.sleep(wait_for)
                    continue
                error = _problem(response, method, url)
                if response.status_code < 500:
                    raise error
                if create:
                    self._stats.possible_duplicate_creates += 1
                failure = TransientError(str(error), status=error.status, title=error.title, detail=error.detail)
            self._stats.transient_errors += 1
            failures += 1
            if failures >= self.max_request_attempts:
                raise TransientError(f"{failure} (gave up after {failures} attempts)", status=failure.status)
            time.sleep(self.backoff_seconds * 2 ** (failures - 1) * random.uniform(0.5, 1.5))


def _batches(urls: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for url in urls:
        batch.append(url)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _path_of(url: str) -> str:
    return urlsplit(url).path


def _retry_after(response: requests.Response) -> float | None:
    try:
        value = response.json().get("retry_after")
    except (ValueError, AttributeError):
        value = None
    if value is None:
        value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _problem(response: requests.Response, method: str, url: str) -> ReplicateError:
    """Turn an error answer into the right exception, with a message that says what to do."""
    status = response.status_code
    try:
        body = response.json()
        if not isinstance(body, dict):
            body = {}
    except ValueError:
        body = {}  # e.g. an HTML page from a proxy
    title, detail = body.get("title"), body.get("detail")
    said = (detail or title or response.reason or "").strip()
    where = f"{method} {_path_of(url)}"
    if status == 401:
        return ReplicateConfigError(
            f"Replicate rejected the API token (401 {said}): set REPLICATE_API_TOKEN to a valid token "
            "from replicate.com/account/api-tokens",
            status,
            title,
            detail,
        )
    if status == 402:
        return ReplicateConfigError(
            f"Replicate refused for lack of credit (402 {said}): add credit at replicate.com/account/billing",
            status,
            title,
            detail,
        )
    if status == 404:
        return ReplicateConfigError(
            f"{where} answered 404 ({said}): check REPLICATE_MODEL (one of {', '.join(MODELS)}) and REPLICATE_BASE_URL",
            status,
            title,
            detail,
        )
    if status == 422 and "version" in (title or "").lower():
        return ReplicateConfigError(
            f"Replicate does not accept the model version ({said}): check REPLICATE_MODEL", status, title, detail
        )
    if status >= 500:
        return TransientError(f"API request failed with status {status}", status, title, detail)
    return ReplicateError(f"API request failed with status {status}: {said}", status, title, detail)


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return {"status": "failed", "error": "malformed answer: the prediction is not a JSON object"}
    return body


def _predict_time(prediction: dict[str, Any]) -> float:
    metrics = prediction.get("metrics") or {}
    value = metrics.get("predict_time") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _read_output(prediction: dict[str, Any], urls: list[str], spec: ModelSpec) -> list[ImageOutcome]:
    """Map a succeeded prediction's output back to its URLs, validating every vector."""
    output = prediction.get("output")
    if output is None:
        why = "its output was removed (data_removed)" if prediction.get("data_removed") else "output is null"
        return [ImageOutcome(u, error=f"malformed output: {why}") for u in urls]
    if spec.batched:
        by_input: dict[str, Any] = {}
        if isinstance(output, list):
            for item in output:
                if isinstance(item, dict) and isinstance(item.get("input"), str):
                    by_input[item["input"]] = item.get("embedding")
        vectors = [by_input.get(u) for u in urls]
    else:
        vectors = [output.get("embedding") if isinstance(output, dict) else None]
    outcomes = []
    for url, vector in zip(urls, vectors, strict=True):
        problem = vector_problem(vector)
        outcomes.append(
            ImageOutcome(url, error=f"malformed output: {problem}")
            if problem
            else ImageOutcome(url, embedding=[float(x) for x in vector])
        )
    return outcomes


def vector_problem(vector: Any, dimensions: int = DIMENSIONS) -> str | None:
    """Why `vector` is not a usable CLIP embedding, or None when it is."""
    if not isinstance(vector, list):
        return f"expected a list of {dimensions} floats, got {type(vector).__name__}"
    if len(vector) != dimensions:
        return f"expected {dimensions} values, got {len(vector)}"
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in vector):
        return "the embedding holds values that are not numbers"
    if not all(math.isfinite(x) for x in vector):
        return "the embedding holds NaN or infinite values"
    if not any(vector):
        return "the embedding is all zeros"
    return None
