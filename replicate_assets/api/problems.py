"""Error answers of the search API and the page: which status and words each failure gets (`failure_of`), one
JSON shape for every status (`problem`), and Replicate's failures said in words."""

from __future__ import annotations

import dataclasses
import logging
import re
from http import HTTPStatus

import sqlalchemy as sa
from starlette.responses import JSONResponse

from replicate_assets.db.engine import CatalogueError
from replicate_assets.replicate import ReplicateError
from replicate_assets.replicate.errors import ReplicateConfigError, ReplicateUnavailableError, TransientError
from replicate_assets.similarity.queries import BadQuery
from replicate_assets.urls import redact, shown

log = logging.getLogger("replicate_assets.api")

# What the model's download error says, in words a caller can act on (never the socket's own text).
LOAD_FAILURES = [
    (re.compile(r"HTTP (401|403)\b"), "its host refused access (HTTP {0}): the URL must be public"),
    (re.compile(r"HTTP 404\b"), "its host answered 404 Not Found"),
    (re.compile(r"HTTP (\d{3})\b"), "its host answered HTTP {0}"),
    (re.compile(r"too large", re.I), "it is too large for the model"),
    (re.compile(r"NameResolution|Name or service not known|getaddrinfo|nodename", re.I), "its host name is unknown"),
    (re.compile(r"SSL|TLS|certificate", re.I), "a secure connection to its host failed"),
    (re.compile(r"timed? ?out", re.I), "its host did not answer in time"),
    (re.compile(r"refused|Failed to establish|Max retries|reset", re.I), "its host could not be reached"),
]


@dataclasses.dataclass(frozen=True)
class Failure:
    status: int
    detail: str
    retry_after: int | None = None


class Busy(Exception):
    """Every slot of the server stayed taken while the request waited."""


class Throttled(Exception):
    """The cap of new (paid) queries a minute is reached."""

    def __init__(self, per_minute: int, seconds: int):
        super().__init__(
            f"the cap of {per_minute} new text or image queries a minute is reached (each costs a Replicate "
            f"prediction; a repeated query is answered from the cache): try again in {seconds} s"
        )
        self.seconds = seconds


def failure_of(err: Exception, image: str | None, timeout: float) -> Failure | None:
    """What a request's failure is to its caller (None: not one we expect, the caller re-raises it)."""
    if isinstance(err, Busy):
        return Failure(503, "the search service is busy: try again in a moment", 1)
    if isinstance(err, BadQuery):
        return Failure(400, str(err))
    if isinstance(err, LookupError):
        return Failure(404, str(err).strip("'\""))
    if isinstance(err, Throttled):
        return Failure(429, str(err), err.seconds)
    if isinstance(err, ReplicateError):
        log.warning("a query could not be embedded: %s", redact(str(err)))
        return replicate_failure(err, image)
    if isinstance(err, TimeoutError):
        return Failure(504, f"the search took longer than {timeout:g} s: try again")
    if isinstance(err, (CatalogueError, sa.exc.SQLAlchemyError)):
        log.warning("the shop database cannot serve: %s", redact(str(err).splitlines()[0]))
        return Failure(503, "the shop database cannot be reached right now: try again shortly", 5)
    return None


def problem(status: int, detail: str, retry_after: int | None = None) -> JSONResponse:
    """The one shape of every error: status, title, detail (and retry_after with a Retry-After header)."""
    body: dict = {"status": status, "title": HTTPStatus(status).phrase, "detail": detail}
    headers = None
    if retry_after is not None:
        body["retry_after"] = retry_after
        headers = {"Retry-After": str(retry_after)}
    return JSONResponse(body, status, headers=headers)


def load_failure_in_words(error: str) -> str:
    for pattern, words in LOAD_FAILURES:
        found = pattern.search(error)
        if found:
            return words.format(*found.groups())
    return "the model could not read it as an image"


def replicate_failure(err: ReplicateError, image: str | None) -> Failure:
    """A query Replicate did not embed: the caller's image (422), Replicate away (503), the service's own set-up
    (503, the operator's log says more), or the prediction failing (502)."""
    if isinstance(err, (ReplicateUnavailableError, TransientError)):
        return Failure(503, "Replicate cannot be reached right now: try again in a minute", 60)
    if isinstance(err, ReplicateConfigError):
        return Failure(
            503,
            "new text and image queries cannot be embedded right now (the service's Replicate account or model "
            "needs its operator); similar products and queries asked before still work",
            300,
        )
    if image is not None:
        return Failure(422, f"the model could not load the image at {shown(image)}: {load_failure_in_words(str(err))}")
    return Failure(502, "Replicate could not embed the query: the prediction failed; try again")
