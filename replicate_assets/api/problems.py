"""Error answers of the search API: one JSON shape for every status, and Replicate's failures said in words."""

from __future__ import annotations

import re
from http import HTTPStatus

from starlette.responses import JSONResponse

from replicate_assets.replicate import ReplicateError
from replicate_assets.replicate.errors import ReplicateConfigError, ReplicateUnavailableError, TransientError
from replicate_assets.urls import shown

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


def replicate_problem(err: ReplicateError, image: str | None) -> JSONResponse:
    """A query Replicate did not embed: the caller's image (422), Replicate away (503), the service's own set-up
    (503, the operator's log says more), or the prediction failing (502)."""
    if isinstance(err, (ReplicateUnavailableError, TransientError)):
        return problem(503, "Replicate cannot be reached right now: try again in a minute", retry_after=60)
    if isinstance(err, ReplicateConfigError):
        return problem(
            503,
            "new text and image queries cannot be embedded right now (the service's Replicate account or model "
            "needs its operator); similar products and queries asked before still work",
            retry_after=300,
        )
    if image is not None:
        return problem(422, f"the model could not load the image at {shown(image)}: {load_failure_in_words(str(err))}")
    return problem(502, "Replicate could not embed the query: the prediction failed; try again")
