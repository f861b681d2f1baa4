"""A local stand-in for Replicate's HTTP API, for tests and the demo: a real HTTP server on loopback.

It speaks the endpoints of Replicate's API for the three CLIP models (create by model path or by version,
get, cancel, account, model), honours `Prefer: wait`, downloads each image URL as the real model does, and
answers with an embedding that is a deterministic function of the image bytes (`embedding_for`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import requests

from replicate_assets.replicate import DIMENSIONS, MODELS

OFFICIAL = {"openai/clip"}
URL_LINE = re.compile(r"^https?://")
CREATE_FAULTS = ("server_error", "html_error", "reset", "hang")
PREDICTION_FAULTS = ("slow", "stuck", "failed", "canceled", "aborted", "malformed")
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass
class Faults:
    """Misbehaviour to inject. Rates are fractions (0..1) of create requests; the flags hold for every request."""

    throttle: float = 0.0  # starts a burst: every create answers 429 for `retry_after` seconds
    server_error: float = 0.0  # 500 with a problem-details body
    html_error: float = 0.0  # 502 with an HTML page, as from a proxy
    reset: float = 0.0  # the connection is closed without an answer
    hang: float = 0.0  # the prediction starts, but the answer comes `hang_seconds` later (past read timeouts)
    slow: float = 0.0  # the prediction takes `slow_seconds`, longer than the sync wait: the client polls
    stuck: float = 0.0  # the prediction never ends and reports a status never seen before
    failed: float = 0.0  # the prediction fails with a model error
    canceled: float = 0.0
    aborted: float = 0.0
    malformed: float = 0.0  # succeeded, with output of the wrong length, NaN, or the wrong type
    sparse: float = 0.0  # answers miss optional fields, carry 9-digit timestamps and `logs: null`
    unauthorized: bool = False  # every request answers 401
    no_credit: bool = False  # every create answers 402
    invalid_input: str | None = None  # creates whose input contains this text answer 422 (input validation)
    retry_after_in: str = "body"  # where 429s say when to come back: "body" (as Replicate does), "header", "none"
    retry_after: int = 1
    hang_seconds: float = 3.0
    slow_seconds: float = 2.0
    poll_errors: bool = False  # the transient rates apply to GETs of predictions too
    vague_errors: bool = False  # a failed prediction's error does not say which input failed
    start_after: int = 0  # the faults hold from this many create requests on ...
    stop_after: int | None = None  # ... until this many (None: for ever)


def embedding_for(data: bytes) -> list[float]:
    """The emulator's embedding of some bytes: 768 floats, the same for the same bytes."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(DIMENSIONS)
    return [round(float(x), 6) for x in vector]


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


NO_FAULTS = Faults()
RESET = -1  # a status meaning: close the connection without an answer


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    ready_at: float  # monotonic time the model finishes
    created_at: str = field(default_factory=_now_iso)
    status: str = "starting"
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    predict_time: float | None = None
    fault: str | None = None
    sparse: bool = False
    data_removed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self, base_url: str) -> dict[str, Any]:
        if self.sparse:
            return self._sparse_document(base_url)
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": "",
            "output": self.output,
            "data_removed": self.data_removed,
            "error": self.error,
            "status": self.status,
            "source": "api",
            "created_at": self.created_at,
            "urls": {
                "get": f"{base_url}/predictions/{self.id}",
                "cancel": f"{base_url}/predictions/{self.id}/cancel",
                "web": f"https://replicate.com/p/{self.id}",
            },
        }
        if self.started_at:
            doc["started_at"] = self.started_at
        if self.completed_at:
            doc["completed_at"] = self.completed_at
            doc["metrics"] = {"predict_time": self.predict_time, "total_time": self.predict_time}
        return doc

    def _sparse_document(self, base_url: str) -> dict[str, Any]:
        """An older, looser answer: no urls.web, no data_removed, null logs, nanosecond timestamps."""
        doc: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "input": self.input,
            "logs": None,
            "status": self.status,
            "created_at": self.created_at.replace("Z", "123Z"),
            "urls": {"get": f"{base_url}/predictions/{self.id}", "cancel": f"{base_url}/predictions/{self.id}/cancel"},
        }
        if self.status not in ("starting", "processing"):
            doc.update(
                output=self.output,
                error=self.error,
                completed_at=self.completed_at.replace("Z", "987Z"),
                metrics={"predict_time": self.predict_time},
            )
        return doc


class TokenBucket:
    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0, or the seconds until one is free."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


class Emulator:
    """Replicate's API on 127.0.0.1. Use as a context manager, or `start()` / `stop()`; `base_url` ends in /v1.

    latency: seconds each prediction runs (plus up to `jitter`); creates_per_minute: the create rate limit
    (None: unlimited); token: the only token accepted (None: any non-empty token); retention: seconds after which
    a prediction's input and output are removed (`data_removed`), an hour as on Replicate. Removal also keeps a
    long-running emulator's memory bounded; so does log_requests=False, which keeps no `requests` log (tests
    read it to count creates per image).
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
    ):
        self.latency, self.jitter, self.token, self.predict_time = latency, jitter, token, predict_time
        self.retention, self.log_requests = retention, log_requests
        self.unremoved: deque[Prediction] = deque()  # in creation order, the predictions still holding data
        self.limiter = TokenBucket(creates_per_minute, burst) if creates_per_minute else None
        self.predictions: dict[str, Prediction] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.faults: dict[str, Faults] = {}  # by model name; "*" for every model
        self.random = random.Random(seed)
        self.throttled_until = 0.0
        self.create_requests = 0  # create requests received, whatever their answer
        self.in_flight = 0  # create requests being answered now ...
        self.max_in_flight = 0  # ... and the most at once
        self.download = requests.Session()
        self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        self.server.daemon_threads = True
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

    def creates(self) -> list[dict[str, Any]]:
        """The create requests received (answered or not), each with the inputs it carried."""
        with self.lock:
            return [r for r in self.requests if r["create"]]

    def creates_per_input(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.creates():
            if request["status"] < 300:
                for item in request["inputs"]:
                    counts[item] = counts.get(item, 0) + 1
        return counts

    # -- the model's work ---------------------------------------------------------------------------------------

    def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return base64.b64decode(url.partition(",")[2])
        response = self.download.get(url, timeout=10)
        if response.status_code != 200 or not response.content:
            raise ValueError(f"Failed to download image from {url}: HTTP {response.status_code}")
        return response.content

    def _run(self, prediction: Prediction) -> None:
        """Compute the output of a prediction whose time has come (once)."""
        prediction.completed_at = _now_iso()
        prediction.predict_time = self.predict_time
        if prediction.fault in ("failed", "canceled", "aborted"):
            prediction.status = prediction.fault
            if prediction.fault == "failed":
                prediction.error = "CUDA error: an illegal memory access was encountered (emulated)"
            return
        try:
            if prediction.model == "andreasjansson/clip-features":
                lines = [line for line in prediction.input["inputs"].split("\n") if line.strip()]
                output = []
                for line in dict.fromkeys(lines):
                    data = self._fetch(line) if URL_LINE.match(line) else line.encode()
                    output.append({"input": line, "embedding": array("d", embedding_for(data))})
                prediction.output = output
            else:
                image = prediction.input.get("image")
                data = self._fetch(image) if image else prediction.input["text"].encode()
                prediction.output = {"embedding": array("d", embedding_for(data))}  # 6 KB, not 25 as a list
            prediction.status = "succeeded"
        except (ValueError, requests.RequestException) as err:
            prediction.status, prediction.error = "failed", str(err)
            if self.faults_for(prediction.model, 0).vague_errors:
                prediction.error = "Prediction failed."
        if prediction.fault == "malformed" and prediction.status == "succeeded":
            prediction.output = self._malformed(prediction.output)

    def _malformed(self, output: Any) -> Any:
        with self.lock:
            kind = self.random.randrange(4)
        vector = [0.1] * DIMENSIONS
        bad = [vector[:-1], [float("nan")] + vector[1:], ["0.1"] * DIMENSIONS, None][kind]
        if isinstance(output, list):
            return [{**item, "embedding": bad} for item in output]
        return {"embedding": bad}

    def settle(self, prediction: Prediction) -> None:
        with prediction.lock:
            now = time.monotonic()
            if prediction.fault == "stuck" and prediction.status not in ("canceled",):
                prediction.status = "booting"  # a status no client knows
            elif prediction.status in ("starting", "processing"):
                if now >= prediction.ready_at:
                    self._run(prediction)
                elif prediction.status == "starting":
                    prediction.status, prediction.started_at = "processing", _now_iso()
            if now >= prediction.ready_at + self.retention and prediction.status not in ("starting", "processing"):
                prediction.input, prediction.output, prediction.data_removed = {}, None, True

    def remove_expired_data(self) -> None:
        """Remove the input and output of every finished prediction older than the retention."""
        now = time.monotonic()
        while True:
            with self.lock:
                if not self.unremoved or self.unremoved[0].ready_at + self.retention > now:
                    return
                prediction = self.unremoved.popleft()
            if prediction.status in ("starting", "processing"):
                continue  # never asked for again: `settle` runs it, and removes its data, if anyone does
            self.settle(prediction)

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
            self.predictions[prediction.id] = prediction
            self.unremoved.append(prediction)
        if wait:
            time.sleep(max(0.0, min(wait, prediction.ready_at - time.monotonic())))
        self.settle(prediction)
        return prediction


def _json_default(value: Any) -> Any:
    if isinstance(value, array):  # an embedding, kept compact until it is answered
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _parse_wait(prefer: str | None) -> float | None:
    if not prefer:
        return None
    match = re.search(r"\bwait(?:=(\d+))?", prefer)
    if not match:
        return None
    return float(min(60, max(1, int(match.group(1))))) if match.group(1) else 60.0


def _validation_error(field_name: str, description: str) -> tuple[int, dict[str, Any]]:
    return 422, {
        "title": "Input validation failed",
        "detail": f"- {field_name}: {description}\n",
        "status": 422,
        "invalid_fields": [{"type": "required", "field": field_name, "description": description}],
    }


def _check_input(model: str, payload: Any) -> tuple[int, dict[str, Any]] | None:
    if not isinstance(payload, dict):
        return _validation_error("input", "Invalid type. Expected: object")
    if model == "andreasjansson/clip-features":
        if not isinstance(payload.get("inputs"), str) or not payload["inputs"].strip():
            return _validation_error("input", "inputs is required")
    elif not any(isinstance(payload.get(k), str) and payload[k] for k in ("image", "text")):
        return _validation_error("input", "image or text is required")
    elif isinstance(payload.get("image"), str) and not re.match(r"^(https?://|data:)", payload["image"]):
        return _validation_error("input.image", "Does not match format 'uri'")
    return None


NOT_FOUND = (404, {"detail": "The requested resource could not be found.", "status": 404})


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read emulator.requests
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            entry: dict[str, Any] = {
                "method": method,
                "path": self.path,
                "create": False,
                "inputs": [],
                "status": 0,
                "at": time.time(),
            }
            status, body, headers = self._route(method, raw, entry)
            entry["status"] = status
            if emulator.log_requests:
                with emulator.lock:
                    emulator.requests.append(entry)
            if status == RESET:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(body, str):
                data, content_type = body.encode(), "text/html"
            else:
                data = json.dumps(body, default=_json_default).encode()
                content_type = "application/problem+json" if status >= 400 else "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str, raw: bytes, entry: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
            auth = self.headers.get("Authorization") or ""
            scheme, _, token = auth.partition(" ")
            unauthorized = emulator.faults_for(None).unauthorized
            if (
                unauthorized
                or scheme not in ("Bearer", "Token")
                or not token
                or (emulator.token and token != emulator.token)
            ):
                return (
                    401,
                    {
                        "title": "Unauthenticated",
                        "detail": "You did not pass a valid authentication token",
                        "status": 401,
                    },
                    {},
                )
            path = self.path.split("?")[0].rstrip("/")
            parts = path.split("/")[1:]
            if parts[:1] != ["v1"]:
                return (*NOT_FOUND, {})
            parts = parts[1:]
            if method == "GET" and parts == ["account"]:
                return (
                    200,
                    {"type": "user", "username": "emulator", "name": "Replicate Emulator", "github_url": None},
                    {},
                )
            if method == "GET" and len(parts) == 3 and parts[0] == "models":
                return self._model(f"{parts[1]}/{parts[2]}")
            if method == "GET" and len(parts) == 2 and parts[0] == "predictions":
                prediction = emulator.predictions.get(parts[1])
                if prediction is None:
                    return (*NOT_FOUND, {})
                faults = emulator.faults_for(prediction.model)
                if faults.poll_errors:
                    transport = emulator.draw(faults, CREATE_FAULTS[:3])
                    if transport:
                        return _transport_fault(transport)
                emulator.settle(prediction)
                return 200, prediction.document(emulator.base_url), {}
            if method == "POST" and len(parts) == 3 and parts[0] == "predictions" and parts[2] == "cancel":
                prediction = emulator.predictions.get(parts[1])
                if prediction is None:
                    return (*NOT_FOUND, {})
                with prediction.lock:
                    if prediction.status in ("starting", "processing"):
                        prediction.status, prediction.completed_at = "canceled", _now_iso()
                return 200, prediction.document(emulator.base_url), {}
            if method == "POST" and (
                parts == ["predictions"] or (len(parts) == 4 and parts[0] == "models" and parts[3] == "predictions")
            ):
                entry["create"] = True
                entry["prefer"] = self.headers.get("Prefer")
                with emulator.lock:
                    entry["index"] = emulator.create_requests
                    emulator.create_requests += 1
                    emulator.in_flight += 1
                    emulator.max_in_flight = max(emulator.max_in_flight, emulator.in_flight)
                try:
                    return self._create(parts, raw, entry)
                finally:
                    with emulator.lock:
                        emulator.in_flight -= 1
            return (*NOT_FOUND, {})

        def _model(self, name: str) -> tuple[int, Any, dict[str, str]]:
            spec = MODELS.get(name)
            if spec is None:
                return (*NOT_FOUND, {})
            owner, model_name = name.split("/")
            version = spec.version or "openai-clip-" + "0" * 52
            return (
                200,
                {
                    "url": f"https://replicate.com/{name}",
                    "owner": owner,
                    "name": model_name,
                    "description": "CLIP ViT-L/14 embeddings (emulated)",
                    "visibility": "public",
                    "latest_version": {
                        "id": version,
                        "created_at": "2024-01-01T00:00:00.000Z",
                        "openapi_schema": {"info": {"title": "Cog"}},
                    },
                },
                {},
            )

        def _create(self, parts: list[str], raw: bytes, entry: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return 400, {"detail": "Request body is not valid JSON", "status": 400}, {}
            if not isinstance(body, dict):
                return _validation_error("body", "Invalid type. Expected: object") + ({},)
            if parts[0] == "models":
                model, version = f"{parts[1]}/{parts[2]}", "hidden"
                if model not in OFFICIAL:
                    return (*NOT_FOUND, {})
                allowed = {"input", "webhook", "webhook_events_filter", "stream"}
            else:
                model, version = self._resolve_version(body.get("version"))
                if model is None:
                    return (
                        422,
                        {
                            "title": "Invalid version or not permitted",
                            "detail": "The specified version does not exist (or perhaps you don't have "
                            "permission to use it?)",
                            "status": 422,
                        },
                        {},
                    )
                allowed = {"version", "input", "webhook", "webhook_events_filter", "stream"}
            extra = set(body) - allowed
            if extra:
                return _validation_error(sorted(extra)[0], "Additional property is not allowed") + ({},)
            payload = body.get("input")
            problem = _check_input(model, payload)
            if isinstance(payload, dict):
                entry["inputs"] = _inputs_of(model, payload)
            if problem:
                return (*problem, {})
            faults = emulator.faults_for(model, entry["index"])
            if faults.no_credit:
                detail = "You have insufficient credit to run this model. Go to https://replicate.com/account/billing"
                return 402, {"title": "Insufficient credit", "status": 402, "detail": detail}, {}
            if faults.invalid_input and faults.invalid_input in json.dumps(payload):
                return _validation_error("input.image", "Could not identify image file (emulated)") + ({},)
            wait_for = max(emulator.limiter.take() if emulator.limiter else 0.0, emulator.throttled(faults))
            if wait_for:
                seconds = max(1, math.ceil(wait_for))
                body = {"detail": f"Request was throttled. Your rate limit resets in ~{seconds}s.", "status": 429}
                if faults.retry_after_in != "body":
                    return 429, body, ({"Retry-After": str(seconds)} if faults.retry_after_in == "header" else {})
                return 429, {**body, "retry_after": seconds}, {}
            transport = emulator.draw(faults, CREATE_FAULTS)
            if transport in ("server_error", "html_error", "reset"):
                return _transport_fault(transport)
            prediction = emulator.create(model, version, payload, _parse_wait(self.headers.get("Prefer")), faults)
            if transport == "hang":
                time.sleep(faults.hang_seconds)  # the prediction runs (and is paid for); the client gave up
            url = f"{emulator.base_url}/predictions/{prediction.id}"
            return 201, prediction.document(emulator.base_url), {"Location": url}

        @staticmethod
        def _resolve_version(version: Any) -> tuple[str | None, str]:
            if not isinstance(version, str):
                return None, ""
            name, _, digest = version.rpartition(":") if ":" in version else ("", "", version)
            for model, spec in MODELS.items():
                if version == model and model in OFFICIAL:
                    return model, "hidden"
                if spec.version and digest == spec.version and name in ("", model):
                    return model, spec.version
            return None, ""

    return Handler


def _transport_fault(kind: str) -> tuple[int, Any, dict[str, str]]:
    if kind == "server_error":
        return 500, {"title": "Internal Server Error", "detail": "Something went wrong (emulated)", "status": 500}, {}
    if kind == "html_error":
        return 502, HTML_PAGE, {}
    return RESET, None, {}


def _inputs_of(model: str, payload: dict[str, Any]) -> list[str]:
    if model == "andreasjansson/clip-features":
        return [line for line in str(payload.get("inputs", "")).split("\n") if line.strip()]
    return [str(payload.get("image") or payload.get("text") or "")]


def serve(
    port: int,
    latency: float,
    creates_per_minute: float | None,
    token: str | None,
    retention: float = 3600.0,
    on_ready: Callable[[Emulator], None] | None = None,
) -> None:
    """Run the emulator in the foreground until interrupted."""
    emulator = Emulator(
        port=port,
        latency=latency,
        creates_per_minute=creates_per_minute,
        token=token,
        retention=retention,
        log_requests=False,
    )
    if on_ready:
        on_ready(emulator)
    try:
        emulator.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.server.server_close()
