"""What a search may ask, checked once for the CLI and the HTTP API before anything is paid, and normalised to what
the model sees, so that two spellings of one query are one cache entry and one prediction.

Text: Unicode NFC, whitespace collapsed, lower-cased (CLIP's tokenizer lower-cases and splits on whitespace, so
`Red  BAG ` and `red bag` are the same input to the model); control characters refused. Image: an http(s) URL
with its scheme and host lower-cased, a default port and a fragment dropped. Numbers: ASCII digits only, finite,
within their bounds. A product id beyond the id column's range names no product.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from replicate_assets.urls import resolve_image_url

MAX_TEXT = 300  # characters; CLIP reads 77 tokens, a longer text is cut by the model anyway
MAX_URL = 2048
MAX_LIMIT = 100
MAX_PRODUCT_ID = 2**63 - 1  # BIGINT: a larger id cannot name a product
WHOLE = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DEFAULT_PORTS = {"http": 80, "https": 443}


class BadQuery(ValueError):
    """A query that cannot be answered as asked: the message says what to change."""


class NoSuchProduct(LookupError):
    """The product asked about does not exist (or is deleted): a 404."""


@dataclass(frozen=True)
class Query:
    kind: str  # "text" or "image"
    value: str  # normalised: the cache key and what the model is sent


def text_query(raw: str | None) -> Query:
    """Words to search for, normalised; BadQuery for blank, over-long or control-character text."""
    if raw is None:
        raise BadQuery("text is missing: give some words, e.g. text=red leather bag")
    text = unicodedata.normalize("NFC", raw)
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and not c.isspace()]
    if bad:
        raise BadQuery(f"text holds a control or unassigned character (U+{ord(bad[0]):04X}): send plain words")
    text = " ".join(text.split()).lower()
    if not text:
        raise BadQuery("text is empty: give some words, e.g. text=red leather bag")
    if len(text) > MAX_TEXT:
        raise BadQuery(f"text is {len(text)} characters long: at most {MAX_TEXT}")
    return Query("text", text)


def image_query(raw: str | None) -> Query:
    """An example photo's URL, normalised; BadQuery for anything the model could not fetch."""
    if raw is None or not raw.strip():
        raise BadQuery("image is empty: give the http(s) URL of an example photo")
    if len(raw) > MAX_URL:
        raise BadQuery(f"image is a URL of {len(raw)} characters: at most {MAX_URL}")
    url, why = resolve_image_url(raw, None)
    if url is None:
        raise BadQuery(f"image must be an http(s) URL the model can fetch ({why})")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise BadQuery("image has a port that is not a number between 1 and 65535") from None
    netloc = parts.netloc
    if port is not None and DEFAULT_PORTS.get(parts.scheme) == port:
        netloc = netloc.rsplit(":", 1)[0]
    return Query("image", urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")))


def whole_number(name: str, raw: str | int | None, low: int, high: int, default: int) -> int:
    """An integer parameter written in ASCII digits, within [low, high]."""
    if raw is None or raw == "":
        return default
    if isinstance(raw, str) and not WHOLE.fullmatch(raw.strip()):
        raise BadQuery(f"{name}={raw!r} is not a whole number: use digits 0-9, between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadQuery(f"{name}={value} is out of range: between {low} and {high}")
    return value


def score(name: str, raw: str | float | None) -> float | None:
    """A cosine threshold written in ASCII, finite, within [-1, 1]; None when not given."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and not DECIMAL.fullmatch(raw.strip()):
        raise BadQuery(f"{name}={raw!r} is not a number: use e.g. 0.25, between -1 and 1")
    value = float(raw)
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise BadQuery(f"{name}={raw} is out of range: a cosine between -1 and 1")
    return value


def product_id(raw: str | int) -> int:
    """A product id; NoSuchProduct when it cannot name one (beyond the id column's range, zero, negative)."""
    if isinstance(raw, str) and not WHOLE.fullmatch(raw.strip()):
        raise BadQuery(f"product id {raw!r} is not a whole number")
    value = int(raw)
    if not 1 <= value <= MAX_PRODUCT_ID:
        raise NoSuchProduct(f"product {value} does not exist")
    return value
