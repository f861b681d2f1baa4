"""The emulator's HTTP side: Replicate's endpoints, answers and errors, routed to the `Emulator` state."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import socket
import time
from array import array
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from replicate_assets.replicate import MODELS
from replicate_assets.testing.emulator.faults import CREATE_FAULTS, LOGIN_PAGE, RESET, transport_fault

if TYPE_CHECKING:
    from replicate_assets.testing.emulator.predictions import Prediction
    from replicate_assets.testing.emulator.server import Emulator

OFFICIAL = {"openai/clip"}
Answer = tuple[int, Any, dict[str, str]]
NOT_FOUND: Answer = (404, {"detail": "The requested resource could not be found.", "status": 404}, {})
UNAUTHENTICATED: Answer = (
    401,
    {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401},
    {},
)
CREATE_FIELDS = {"input", "webhook", "webhook_events_filter", "stream"}
LIST_PAGE = 100


def _json_default(value: Any) -> Any:
    if isinstance(value, array):  # an embedding, kept compact until it is answered
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _parse_wait(prefer: str | None) -> float | None:
    match = re.search(r"\bwait(?:=(\d+))?", prefer or "")
    if not match:
        return None
    return float(min(60, max(1, int(match.group(1))))) if match.group(1) else 60.0


def _validation_error(field_name: str, description: str) -> Answer:
    body = {
        "title": "Input validation failed",
        "detail": f"- {field_name}: {description}\n",
        "status": 422,
        "invalid_fields": [{"type": "required", "field": field_name, "description": description}],
    }
    return 422, body, {}


def _check_input(model: str, payload: Any) -> Answer | None:
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


def _inputs_of(model: str, payload: dict[str, Any]) -> list[str]:
    if model == "andreasjansson/clip-features":
        return [line for line in str(payload.get("inputs", "")).split("\n") if line.strip()]
    return [str(payload.get("image") or payload.get("text") or "")]


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


def _epoch(value: str | None) -> float | None:
    """An ISO 8601 bound of the list (`created_after`, `created_before`) as epoch seconds."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p={position}".encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("p="))
    except (ValueError, UnicodeDecodeError):
        return None


def list_page(
    emulator: Emulator, after: float | None, before: float | None, cursor: int | None
) -> tuple[list[Prediction], int | None]:
    """One page of predictions, newest first, created after `after` and before `before` (epoch seconds);
    `cursor` is where the previous page stopped. Returns the page and the next cursor (None: the end)."""
    with emulator.lock:
        position = len(emulator.ordered) - 1 if cursor is None else min(cursor, len(emulator.ordered) - 1)
        page: list[Prediction] = []
        while position >= 0 and len(page) < LIST_PAGE:
            prediction = emulator.ordered[position]
            if after is not None and prediction.created <= after:
                position = -1
                break
            if before is None or prediction.created < before:
                page.append(prediction)
            position -= 1
    for prediction in page:
        emulator.settle(prediction)
    return page, (position if position >= 0 else None)


def list_answer(emulator: Emulator, query: dict[str, list[str]]) -> Answer:
    """GET /v1/predictions: newest first, 100 a page, `next` / `previous` links, optional time bounds."""
    first = {name: values[0] for name, values in query.items() if values}
    after, before = _epoch(first.get("created_after")), _epoch(first.get("created_before"))
    page, position = list_page(emulator, after, before, decode_cursor(first.get("cursor")))
    link = None
    if position is not None:
        bounds = {k: v for k, v in first.items() if k in ("created_after", "created_before")}
        link = f"{emulator.base_url}/predictions?{urlencode({**bounds, 'cursor': encode_cursor(position)})}"
    results = [p.document(emulator.base_url) for p in page]
    return 200, {"previous": None, "next": link, "results": results}, {}


def model_answer(name: str, version: str | None) -> Answer:
    spec = MODELS.get(name)
    if spec is None:
        return NOT_FOUND
    latest = {
        "id": spec.version or "openai-clip-" + "0" * 52,
        "created_at": "2024-01-01T00:00:00.000Z",
        "cog_version": "0.9.4",
        "openapi_schema": {"info": {"title": "Cog"}},
    }
    if version is not None:
        return (200, latest, {}) if version == latest["id"] else NOT_FOUND
    owner, model_name = name.split("/")
    body = {
        "url": f"https://replicate.com/{name}",
        "owner": owner,
        "name": model_name,
        "description": "CLIP ViT-L/14 embeddings (emulated)",
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": latest,
    }
    return 200, body, {}


class Handler(BaseHTTPRequestHandler):
    """One request to the emulator; `self.server.emulator` is the state it answers from."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stall

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

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
        emulator = self.emulator
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

    def _route(self, method: str, raw: bytes, entry: dict[str, Any]) -> Answer:
        emulator = self.emulator
        if emulator.faults_for(None).not_replicate:
            return 200, LOGIN_PAGE, {}
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if (
            emulator.faults_for(None).unauthorized
            or scheme not in ("Bearer", "Token")
            or not token
            or (emulator.token and token != emulator.token)
        ):
            return UNAUTHENTICATED
        url = urlsplit(self.path)
        parts = url.path.rstrip("/").split("/")[1:]
        if parts[:1] != ["v1"]:
            return NOT_FOUND
        parts = parts[1:]
        if method == "GET":
            return self._get(parts, parse_qs(url.query))
        if parts == ["predictions"] or (len(parts) == 4 and parts[0] == "models" and parts[3] == "predictions"):
            return self._counted_create(parts, raw, entry)
        if len(parts) == 3 and parts[0] == "predictions" and parts[2] == "cancel":
            prediction = emulator.predictions.get(parts[1])
            if prediction is None:
                return NOT_FOUND
            emulator.cancel(prediction)
            return 200, prediction.document(emulator.base_url), {}
        return NOT_FOUND

    def _get(self, parts: list[str], query: dict[str, list[str]]) -> Answer:
        emulator = self.emulator
        if parts == ["account"]:
            return 200, {"type": "user", "username": "emulator", "name": "Replicate Emulator", "github_url": None}, {}
        if parts[:1] == ["models"] and len(parts) in (3, 5):
            version = parts[4] if len(parts) == 5 and parts[3] == "versions" else None
            return model_answer(f"{parts[1]}/{parts[2]}", version)
        if parts == ["predictions"]:
            return list_answer(emulator, query)
        if len(parts) == 2 and parts[0] == "predictions":
            prediction = emulator.predictions.get(parts[1])
            if prediction is None:
                return NOT_FOUND
            faults = emulator.faults_for(prediction.model)
            if faults.poll_errors:
                transport = emulator.draw(faults, CREATE_FAULTS[:3])
                if transport:
                    return transport_fault(transport)
            emulator.settle(prediction)
            return 200, prediction.document(emulator.base_url), {}
        return NOT_FOUND

    def _counted_create(self, parts: list[str], raw: bytes, entry: dict[str, Any]) -> Answer:
        emulator = self.emulator
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

    def _create(self, parts: list[str], raw: bytes, entry: dict[str, Any]) -> Answer:
        emulator = self.emulator
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"detail": "Request body is not valid JSON", "status": 400}, {}
        if not isinstance(body, dict):
            return _validation_error("body", "Invalid type. Expected: object")
        if parts[0] == "models":
            model, version, allowed = f"{parts[1]}/{parts[2]}", "hidden", CREATE_FIELDS
            if model not in OFFICIAL:
                return NOT_FOUND
        else:
            (model, version), allowed = _resolve_version(body.get("version")), CREATE_FIELDS | {"version"}
            if model is None:
                detail = "The specified version does not exist (or perhaps you don't have permission to use it?)"
                return 422, {"title": "Invalid version or not permitted", "detail": detail, "status": 422}, {}
        extra = set(body) - allowed
        if extra:
            return _validation_error(sorted(extra)[0], "Additional property is not allowed")
        payload = body.get("input")
        problem = _check_input(model, payload)
        if isinstance(payload, dict):
            entry["inputs"] = _inputs_of(model, payload)
        if problem:
            return problem
        faults = emulator.faults_for(model, entry["index"])
        if faults.no_credit:
            detail = "You have insufficient credit to run this model. Go to https://replicate.com/account/billing"
            return 402, {"title": "Insufficient credit", "status": 402, "detail": detail}, {}
        if faults.invalid_input and faults.invalid_input in json.dumps(payload):
            return _validation_error("input.image", "Could not identify image file (emulated)")
        wait_for = max(emulator.limiter.take() if emulator.limiter else 0.0, emulator.throttled(faults))
        limits = self._rate_headers()
        if wait_for:
            seconds = max(1, math.ceil(wait_for))
            body = {"detail": f"Request was throttled. Your rate limit resets in ~{seconds}s.", "status": 429}
            if faults.retry_after_in != "body":
                header = {"Retry-After": str(seconds)} if faults.retry_after_in == "header" else {}
                return 429, body, {**limits, **header}
            return 429, {**body, "retry_after": seconds}, limits
        transport = emulator.draw(faults, CREATE_FAULTS)
        if transport in ("server_error", "html_error", "reset"):
            return transport_fault(transport)
        prediction = emulator.create(model, version, payload, _parse_wait(self.headers.get("Prefer")), faults)
        if transport == "hang":
            time.sleep(faults.hang_seconds)  # the prediction runs (and is paid for); the client gave up
        location = f"{emulator.base_url}/predictions/{prediction.id}"
        return 201, prediction.document(emulator.base_url), {"Location": location, **limits}

    def _rate_headers(self) -> dict[str, str]:
        """`ratelimit-remaining` (creates left now) and `ratelimit-reset` (seconds until the bucket is full)."""
        limiter = self.emulator.limiter
        if limiter is None:
            return {}
        remaining = limiter.remaining()
        reset = math.ceil((limiter.capacity - remaining) / limiter.rate) if remaining < limiter.capacity else 0
        return {"ratelimit-remaining": str(remaining), "ratelimit-reset": str(reset)}
