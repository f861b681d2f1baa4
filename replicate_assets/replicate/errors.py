"""What can go wrong when talking to Replicate, as exceptions whose messages say what to do.

Which class an error is decides what happens to the images it touches:
- `ReplicateConfigError`: no image can succeed (token, credit, model). Stop the run, no retry.
- `ReplicateUnavailableError`: the API cannot be reached or does not answer as Replicate does. Images stay pending
  and the step is retried later; nothing counts as an attempt of an image.
- `TransientError`: one request failed in a way that may pass (5xx, reset, timeout); retried with backoff.
- `Stopped`: the run was told to stop; nothing more is sent.
"""

from __future__ import annotations


class ReplicateError(Exception):
    """An error answer of the API, carrying its RFC 7807 problem-details fields."""

    def __init__(self, message: str, status: int | None = None, title: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.status, self.title, self.detail = status, title, detail


class ReplicateConfigError(ReplicateError):
    """No image can succeed (token, credit, model): stop the run; the message says what to fix."""


class ReplicateUnavailableError(ReplicateError):
    """The API is down, unreachable, or not Replicate's: images stay pending and the step is retried later."""


class TransientError(ReplicateError):
    """Replicate or the network failed in a way that may pass (5xx, reset, timeout)."""

    def __init__(self, message: str, status: int | None = None, *, sent: bool = True):
        super().__init__(message, status)
        self.sent = sent  # the request may have reached Replicate: a create may have started a prediction


class Stopped(Exception):
    """The run was told to stop (Ctrl-C, SIGTERM, a canceled run): no new request is sent."""
