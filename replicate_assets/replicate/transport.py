"""HTTP to Replicate: one session, timeouts, retries with backoff, and error answers turned into exceptions.

The token is only ever in the `Authorization` header, and is only sent over https or to a loopback host. No
exception raised here carries a header, a request body or a query string.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from replicate_assets.replicate.errors import (
    ReplicateConfigError,
    ReplicateError,
    ReplicateUnavailableError,
    Stopped,
    TransientError,
)
from replicate_assets.replicate.models import MODELS
from replicate_assets.replicate.ratelimit import CreateLimiter

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
USER_AGENT = "replicate_assets/0.1"


@dataclass
class Stats:
    """Counters over a client's life, for asset metadata; threads add to them under a lock."""

    creates: int = 0
    polls: int = 0
    throttled: int = 0  # 429 answers
    transient_errors: int = 0
    possible_duplicate_creates: int = 0  # creates that may have started a prediction no lookup found
    list_requests: int = 0  # pages of GET /predictions read to find what was already created
    adopted: int = 0  # predictions found that way, instead of created again
    refused: int = 0  # answers 401, 402, 404 and invalid version
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + count)


def check_token(token: str | None) -> str:
    """The token as it goes in the header: surrounding whitespace stripped; raises ReplicateConfigError if unusable.

    The message never shows any part of the token.
    """
    token = (token or "").strip()
    if not token:
        raise ReplicateConfigError(
            "REPLICATE_API_TOKEN is not set: create a token at replicate.com/account/api-tokens and export it"
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token) or not token.isascii():
        raise ReplicateConfigError(
            "REPLICATE_API_TOKEN holds spaces, line breaks or other characters a token never has: "
            "copy it again from replicate.com/account/api-tokens"
        )
    return token


class Transport:
    """Sends requests to one Replicate API root with a token, retrying what may pass."""

    def __init__(
        self,
        token: str | None,
        base_url: str,
        *,
        pool_size: int = 16,
        read_timeout: float = 15.0,
        max_attempts: int = 4,
        backoff: float = 1.0,
        stop: threading.Event | None = None,
        stats: Stats | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.read_timeout, self.max_attempts, self.backoff = read_timeout, max_attempts, backoff
        self.stop = stop or threading.Event()
        self.stats = stats or Stats()
        parts = urlsplit(self.base_url)
        if parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
            raise ReplicateConfigError(
                f"REPLICATE_BASE_URL={self.where()} is plain http: the token is only sent over https "
                "(or to a loopback emulator)"
            )
        token = check_token(token)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size + 2)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})

    def where(self) -> str:
        """The API root as it may be shown: scheme, host and path, no userinfo or query."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    def sleep(self, seconds: float) -> None:
        """Wait, unless the run is told to stop."""
        if self.stop.wait(seconds):
            raise Stopped("stopped while waiting")

    def request(
        self,
        method: str,
        path: str,
        *,
        limiter: CreateLimiter | None = None,
        retry_sent: bool = True,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request and return a 2xx answer whose body is JSON.

        429 is waited out (with `limiter` for creates). Failures that may pass are retried with backoff; with
        `retry_sent=False`, one that may have reached Replicate raises TransientError(sent=True) at once, so the
        caller can look for what it created. Raises ReplicateConfigError (401, 402, 404, invalid version),
        ReplicateUnavailableError (unreachable after the retries, or an answer that is not Replicate's),
        ReplicateError (other 4xx, e.g. 422 input validation) or Stopped.
        """
        url = self.url(path)
        failures = 0
        while True:
            if limiter is not None:
                limiter.acquire()
            elif self.stop.is_set():
                raise Stopped("stopped before sending")
            try:
                response = self.session.request(method, url, timeout=(10, timeout or self.read_timeout), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as err:
                sent = not _before_sending(err)
                failure = TransientError(f"{method} {urlsplit(url).path} failed: {_transport_reason(err)}", sent=sent)
            else:
                if response.status_code == 429:
                    self.stats.add("throttled")
                    wait_for = _retry_after(response) or self.backoff * 2 ** min(failures, 5)
                    if limiter is not None:
                        limiter.throttled(wait_for)
                    else:
                        self.sleep(wait_for)
                    continue
                if response.status_code < 400:
                    _require_json(response, method, url, self.where())
                    return response
                error = problem(response, method, url, self.where())
                if not isinstance(error, TransientError):
                    raise error
                failure = error
            self.stats.add("transient_errors")
            failures += 1
            if failure.sent and not retry_sent:
                raise failure
            if failures >= self.max_attempts:
                raise ReplicateUnavailableError(
                    f"Replicate at {self.where()} failed {failures} times in a row ({failure}): the images stay "
                    "pending; check REPLICATE_BASE_URL and the network, or Replicate's status page",
                    failure.status,
                )
            self.sleep(self.backoff * 2 ** (failures - 1) * random.uniform(0.5, 1.5))


def _before_sending(err: Exception) -> bool:
    """The request surely never reached the server: no connection was made (refused, DNS, connect timeout, TLS)."""
    if isinstance(err, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    text = repr(err)
    return isinstance(err, requests.ConnectionError) and any(
        mark in text for mark in ("NewConnectionError", "NameResolutionError", "Failed to resolve", "refused")
    )


def _transport_reason(err: Exception) -> str:
    """A one-phrase reason that carries no URL, header or body."""
    text = repr(err)
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if "NameResolutionError" in text or "Failed to resolve" in text or "Name or service not known" in text:
        return "the host name does not resolve (DNS)"
    if "refused" in text:
        return "connection refused"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return "no answer within the read timeout"
    if "reset" in text.lower() or "RemoteDisconnected" in text or "aborted" in text.lower():
        return "the connection was closed without an answer"
    return type(err).__name__


def _require_json(response: requests.Response, method: str, url: str, where: str) -> None:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0]
        raise ReplicateUnavailableError(
            f"{method} {urlsplit(url).path} at {where} answered {response.status_code} with {kind}, not Replicate's "
            "JSON: REPLICATE_BASE_URL points at something else (a proxy or login page?); the images stay pending",
            response.status_code,
        )


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


def rate_headers(response: requests.Response) -> tuple[int | None, float | None]:
    """`ratelimit-remaining` and `ratelimit-reset` (seconds from now), where Replicate sends them."""

    def number(name: str) -> float | None:
        try:
            return float(response.headers[name])
        except (KeyError, ValueError):
            return None

    remaining, reset = number("ratelimit-remaining"), number("ratelimit-reset")
    if reset is not None and reset > 1e9:  # an epoch, not a delay
        reset = max(0.0, reset - time.time())
    return (int(remaining) if remaining is not None else None), reset


def problem(response: requests.Response, method: str, url: str, where: str) -> ReplicateError:
    """Turn an error answer into the right exception, with a message that says what to do."""
    status = response.status_code
    try:
        body = response.json()
        if not isinstance(body, dict):
            body = None
    except ValueError:
        body = None  # e.g. an HTML page from a proxy
    if status >= 500:
        return TransientError(f"{method} {urlsplit(url).path} answered {status}", status)
    if body is None:
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0]
        return ReplicateUnavailableError(
            f"{method} {urlsplit(url).path} at {where} answered {status} with {kind}, not Replicate's problem "
            "details: check REPLICATE_BASE_URL (it should end in /v1); the images stay pending",
            status,
        )
    title, detail = body.get("title"), body.get("detail")
    said = str(detail or title or response.reason or "").strip()
    if status == 401:
        message = (
            f"Replicate rejected the API token (401 {said}): set REPLICATE_API_TOKEN to a valid token "
            "from replicate.com/account/api-tokens"
        )
        return ReplicateConfigError(message, status, title, detail)
    if status == 402:
        message = f"Replicate refused for lack of credit (402 {said}): add credit at replicate.com/account/billing"
        return ReplicateConfigError(message, status, title, detail)
    if status == 404:
        message = (
            f"{method} {urlsplit(url).path} answered 404 ({said}): check REPLICATE_MODEL (one of "
            f"{', '.join(MODELS)}) and REPLICATE_BASE_URL ({where})"
        )
        return ReplicateConfigError(message, status, title, detail)
    if status == 422 and "version" in str(title or "").lower():
        message = f"Replicate does not accept the model version ({said}): check REPLICATE_MODEL"
        return ReplicateConfigError(message, status, title, detail)
    return ReplicateError(f"API request failed with status {status}: {said}", status, title, detail)
