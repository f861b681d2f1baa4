"""Search queries: one validation for the CLI and the API, before anything is paid; normalised to what the model
sees, so that two spellings of one query are one cache entry."""

import re

import pytest

from replicate_assets.similarity.queries import (
    BadQuery,
    NoSuchProduct,
    image_query,
    product_id,
    score,
    text_query,
    whole_number,
)


@pytest.mark.parametrize("raw", ["red bag", "Red  BAG ", "\tred\nbag", "RED BAG", "red\u00a0bag"])
def test_spellings_of_one_text_are_one_query(raw):
    assert text_query(raw).value == "red bag"


def test_text_is_unicode_nfc():
    assert text_query("cafe\u0301").value == text_query("caf\u00e9").value == "caf\u00e9"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("red\x00bag", "U+0000"),
        ("red\x1b[31mbag", "U+001B"),
        ("", "text is empty"),
        ("   ", "text is empty"),
        ("\u2028 ", "text is empty"),
        ("x" * 301, "at most 300"),
        (None, "text is missing"),
    ],
)
def test_bad_texts_are_refused(raw, message):
    with pytest.raises(BadQuery, match=re.escape(message)):
        text_query(raw)


@pytest.mark.parametrize(
    "raw, url",
    [
        ("HTTPS://CDN.Example.COM/A.png", "https://cdn.example.com/A.png"),
        ("https://cdn.example.com:443/a.png?sig=1#frag", "https://cdn.example.com/a.png?sig=1"),
        ("http://cdn.example.com:80/a.png", "http://cdn.example.com/a.png"),
        ("http://cdn.example.com:8080/a.png", "http://cdn.example.com:8080/a.png"),
        ("  https://cdn.example.com  ", "https://cdn.example.com/"),
    ],
)
def test_image_urls_are_normalised(raw, url):
    assert image_query(raw).value == url


@pytest.mark.parametrize(
    "raw, message",
    [
        ("ftp://files.example/x.png", "http(s) URL"),
        ("https://cdn.example.com/a\x00.png", "control character"),
        ("", "image is empty"),
        ("https://" + "a" * 3000, "at most 2048"),
        ("https://cdn.example.com:99999/a.png", "port"),
        ("x.png", "relative"),
    ],
)
def test_bad_image_urls_are_refused(raw, message):
    with pytest.raises(BadQuery, match=re.escape(message)):
        image_query(raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "2", "-1.5", "\u0660.5", "0x1", "1e999", "abc"])
def test_scores_outside_a_finite_cosine_are_refused(raw):
    with pytest.raises(BadQuery, match="min_score"):
        score("min_score", raw)


def test_scores_and_limits_inside_their_bounds():
    assert score("min_score", "0.25") == 0.25 and score("min_score", "-1") == -1.0 and score("x", None) is None
    assert whole_number("limit", "7", 1, 100, 10) == 7 and whole_number("limit", None, 1, 100, 10) == 10
    for raw in ("0", "101", "\u0661\u0662", "1.5", " ", "1_0"):
        if raw.strip():
            with pytest.raises(BadQuery, match="limit"):
                whole_number("limit", raw, 1, 100, 10)


@pytest.mark.parametrize("raw", ["0", "99999999999999999999999999", str(2**63), -4])
def test_ids_beyond_the_column_name_no_product(raw):
    with pytest.raises(NoSuchProduct, match="does not exist"):
        product_id(raw)


def test_a_product_id_in_range():
    assert product_id("241") == 241 and product_id(2**63 - 1) == 2**63 - 1
    with pytest.raises(BadQuery):
        product_id("\u0661")
