"""Error answers become the exception that decides what happens to the images, with a message that says what to do."""

import json

import pytest
import requests

from replicate_assets.replicate import (
    ReplicateConfigError,
    ReplicateError,
    ReplicateUnavailableError,
    TransientError,
)
from replicate_assets.replicate.transport import _before_sending, _transport_reason, check_token, problem, rate_headers

WHERE = "https://api.replicate.com/v1"


def answer(status: int, body, content_type: str = "application/problem+json", headers=None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = (body if isinstance(body, str) else json.dumps(body)).encode()
    response.headers.update({"Content-Type": content_type, **(headers or {})})
    return response


@pytest.mark.parametrize(
    "status, body, kind, text",
    [
        (
            401,
            {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"},
            ReplicateConfigError,
            "set REPLICATE_API_TOKEN to a valid token",
        ),
        (
            402,
            {"title": "Insufficient credit", "detail": "You have insufficient credit"},
            ReplicateConfigError,
            "add credit at replicate.com/account/billing",
        ),
        (404, {"detail": "The requested resource could not be found."}, ReplicateConfigError, "check REPLICATE_MODEL"),
        (
            422,
            {"title": "Invalid version or not permitted", "detail": "x"},
            ReplicateConfigError,
            "does not accept the model version",
        ),
        (
            422,
            {"title": "Input validation failed", "detail": "- input.image: Does not match format 'uri'"},
            ReplicateError,
            "Does not match format 'uri'",
        ),
        (500, {"title": "Internal Server Error"}, TransientError, "answered 500"),
        (502, "<html>502 Bad Gateway</html>", TransientError, "answered 502"),
        (404, "<html>Not found</html>", ReplicateUnavailableError, "answered 404 with text/html"),
    ],
)
def test_each_error_answer_becomes_what_it_means(status, body, kind, text):
    content_type = "text/html" if isinstance(body, str) else "application/problem+json"
    error = problem(answer(status, body, content_type), "POST", f"{WHERE}/predictions", WHERE)
    assert type(error) is kind and text in str(error)


@pytest.mark.parametrize(
    "token, message",
    [
        ("", "REPLICATE_API_TOKEN is not set"),
        ("r8_abc def", "holds spaces, line breaks"),
        ("r8_abc\ndef", "holds spaces, line breaks"),
        ("r8_abcé", "holds spaces, line breaks"),
    ],
)
def test_tokens_are_checked_without_showing_them(token, message):
    with pytest.raises(ReplicateConfigError, match=message) as raised:
        check_token(token)
    assert "abc" not in str(raised.value)


def test_a_token_read_from_a_file_loses_its_line_break():
    assert check_token("  r8_abc\n") == "r8_abc"


def test_failures_before_sending_are_told_from_those_that_may_have_started_a_prediction():
    refused = requests.ConnectionError("HTTPConnectionPool: NewConnectionError: [Errno 111] Connection refused")
    reset = requests.ConnectionError("('Connection aborted.', RemoteDisconnected('closed without response'))")
    assert _before_sending(refused) and _transport_reason(refused) == "connection refused"
    assert not _before_sending(reset) and _transport_reason(reset) == "the connection was closed without an answer"
    assert not _before_sending(requests.exceptions.ReadTimeout("read timed out"))


def test_rate_limit_headers():
    assert rate_headers(answer(201, {}, headers={"ratelimit-remaining": "0", "ratelimit-reset": "10"})) == (0, 10.0)
    assert rate_headers(answer(201, {})) == (None, None)
