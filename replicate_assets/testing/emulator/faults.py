"""Misbehaviour the emulator can be told to show, each as Replicate (or the network in front of it) shows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CREATE_FAULTS = ("server_error", "html_error", "reset", "hang")
PREDICTION_FAULTS = ("slow", "stuck", "failed", "canceled", "aborted", "malformed")
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
LOGIN_PAGE = "<html><head><title>Sign in</title></head><body><form>Corporate proxy: sign in</form></body></html>"
RESET = -1  # a status meaning: close the connection without an answer


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
    not_replicate: bool = False  # every request answers 200 with an HTML sign-in page, as a captive proxy does
    invalid_input: str | None = None  # creates whose input contains this text answer 422 (input validation)
    retry_after_in: str = "body"  # where 429s say when to come back: "body" (as Replicate does), "header", "none"
    retry_after: int = 1
    hang_seconds: float = 3.0
    slow_seconds: float = 2.0
    poll_errors: bool = False  # the transient rates apply to GETs of predictions too
    vague_errors: bool = False  # a failed prediction's error does not say which input failed
    start_after: int = 0  # the faults hold from this many create requests on ...
    stop_after: int | None = None  # ... until this many (None: for ever)


NO_FAULTS = Faults()


def transport_fault(kind: str) -> tuple[int, Any, dict[str, str]]:
    """The answer (status, body, headers) of a fault of the network or of Replicate's front end."""
    if kind == "server_error":
        return 500, {"title": "Internal Server Error", "detail": "Something went wrong (emulated)", "status": 500}, {}
    if kind == "html_error":
        return 502, HTML_PAGE, {}
    return RESET, None, {}
