"""Image URLs: from a shop's path to what Replicate fetches, and from any message to what may be shown."""

import pytest

from replicate_assets.urls import redact, resolve_image_url, shown


@pytest.mark.parametrize(
    "path, base, url, reason",
    [
        ("https://cdn.shop/a.jpg", None, "https://cdn.shop/a.jpg", None),
        ("products/1/a.jpg", "https://shop.example/storage", "https://shop.example/storage/products/1/a.jpg", None),
        ("/products/1/a.jpg", "https://shop.example/storage/", "https://shop.example/storage/products/1/a.jpg", None),
        ("products/1/a.jpg", None, None, "relative and IMAGE_BASE_URL is not set"),
        ("products/1/a.jpg?signature=s3cr3t", None, None, "'products/1/a.jpg' is relative"),
        ("", "https://x", None, "empty"),
        (None, "https://x", None, "null"),
        ("ftp://x/a.jpg", "https://x", None, "ftp:// URLs cannot be fetched"),
        ("HTTP://CDN.Shop.example/A.jpg?X=1", None, "http://cdn.shop.example/A.jpg?X=1", None),
        ("//cdn.shop.example/a.jpg", None, "https://cdn.shop.example/a.jpg", None),
        ("//cdn.shop.example/a.jpg", "http://shop.example", "http://cdn.shop.example/a.jpg", None),
        ("products/1/a.jpg\nhttps://evil.example/b.jpg", "https://x", None, "control character"),
        ("products/1/a\tb.jpg", "https://x", None, "control character"),
    ],
)
def test_resolve_image_url(path, base, url, reason):
    found_url, found_reason = resolve_image_url(path, base)
    assert found_url == url
    assert (found_reason is None) if reason is None else (reason in found_reason and "s3cr3t" not in found_reason)


@pytest.mark.parametrize(
    "text, secret",
    [
        ("https://bucket.s3.amazonaws.com/a.jpg?X-Amz-Credential=AKIA/x&X-Amz-Signature=S3SIG", "S3SIG"),
        ("https://storage.googleapis.com/b/a.jpg?X-Goog-Algorithm=x&X-Goog-Signature=GCSSIG", "GCSSIG"),
        ("https://acct.blob.core.windows.net/c/a.jpg?sv=2020-08-04&st=2025-01-01T00:00:00Z&sig=AZSIG", "AZSIG"),
        ("https://user:HUNTER2@cdn.shop.example/a.jpg", "HUNTER2"),
        ("HTTP://CDN.SHOP.EXAMPLE/a.jpg?token=UPPERSIG", "UPPERSIG"),
        ("postgresql+psycopg2://shop:DBPASS@db.internal:5432/shop", "DBPASS"),
    ],
    ids=["s3", "gcs", "azure-sas", "userinfo", "uppercase", "database"],
)
def test_urls_are_shown_without_credentials(text, secret):
    message = f"Failed to download image from {text}: HTTP 404 (attempt 1)"
    shown_text = redact(message)
    assert secret not in shown_text
    assert shown_text.startswith("Failed to download image from ") and shown_text.endswith(": HTTP 404 (attempt 1)")
    assert "a.jpg" in shown(text) or "shop" in shown(text)


@pytest.mark.parametrize(
    "text",
    [
        # requests' refused connection, time-out, unknown host and TLS failure quote the path and query alone
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /leak.png?X-Amz-Signature=SECRET"
        " (Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))",
        "HTTPSConnectionPool(host='cdn.example', port=443): Max retries exceeded with url: /a.png?X-Goog-Signature="
        "SECRET&X-Goog-Date=1 (Caused by SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version number')))",
        "KeyError: 'https://acct.blob.core.windows.net/c/a.jpg?sv=2020&sig=SECRET'",
        '{"error": "Failed to download https:\\/\\/cdn.example\\/a.png?sig=SECRET\\u0026x=1"}',
        "failed: https%3A%2F%2Fcdn.example%2Fa.png%3FX-Amz-Signature%3DSECRET%26b%3D2",
        "proxy said: user:SECRET@cdn.example/a.png refused",
        "Image too large: http://USER:SECRET@cdn.example/a.png is over 10 bytes",
        "url: /a.png?Signature=SECRET&Expires=1",
    ],
    ids=["refused", "tls", "keyerror", "json-escaped", "percent-encoded", "userinfo-alone", "userinfo", "s3-legacy"],
)
def test_every_form_a_url_takes_in_an_error_is_redacted(text):
    shown_text = redact(text)
    assert "SECRET" not in shown_text
    assert "a.png" in shown_text or "leak.png" in shown_text or "a.jpg" in shown_text


def test_redaction_leaves_plain_sentences_alone():
    for text in ("Is the image there? Try again.", "HTTP 404 at 12:30:45", "embedding dimension=768"):
        assert redact(text) == text
