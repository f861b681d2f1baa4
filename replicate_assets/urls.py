"""Image URLs: from a shop's path to the URL Replicate fetches, and from any message to what may be shown.

Pure functions, no I/O. Signed storage URLs (S3, GCS, Azure SAS) carry credentials in the query string, and a
URL may carry `user:password@`: neither ever reaches a log, an error, metadata or the UI.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

# Any scheme://..., case-insensitive, up to whitespace or a quote; parsed, never trusted as matched.
URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A query string wherever it stands, with or without its URL (requests' `url: /a.png?X-Amz-Signature=...`): a `?`
# followed by a name and `=`, up to whitespace, a quote or a bracket.
QUERY_IN_TEXT = re.compile(r"\?[^\s'\"<>`()\[\]{}?=]*=[^\s'\"<>`()\[\]{}]*")
# `user:password@host` left without its scheme (a fragment of a message).
USERINFO_IN_TEXT = re.compile(r"(?<![\w.@-])[\w.~%!$&*+,;=-]+:[^\s'\"<>`/@]+@(?=[\w.\[-])")
# The escaped forms a URL takes in an error: JSON (`\/`, `\u0026`) and percent-encoding (`%3F`, `%2F`, ...).
ESCAPES = {"\\/": "/", "\\u0026": "&", "\\u003d": "=", "\\u003f": "?", "\\u0040": "@"}
PERCENT = re.compile(r"%(3[aAdDfF]|2[fF6]|40)")


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def resolve_image_url(path: str | None, image_base_url: str | None) -> tuple[str | None, str | None]:
    """Return (url, None) for a usable image path, or (None, reason) for one that cannot be sent.

    Scheme and host are lower-cased (clip-features tells images from text by a case-sensitive `^https?://`);
    a protocol-relative `//host/x.png` takes the base URL's scheme (https without one); control characters
    (a line break would make two inputs of a batch) are refused. The reason never holds a query string.
    """
    if path is None:
        return None, "invalid image path: the path is null"
    if not path.strip():
        return None, "invalid image path: the path is empty"
    path = path.strip()
    if CONTROL.search(path):
        return None, f"invalid image path: {shown(path)!r} holds a control character (a line break or a tab)"
    if path.startswith("//"):
        scheme = urlsplit(image_base_url).scheme.lower() if image_base_url else "https"
        path = f"{scheme}:{path}"
    parts = urlsplit(path)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            return None, f"invalid image path: {shown(path)!r} has no host"
        return normalised(parts), None
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive, i.e. a relative-looking path
        return None, f"invalid image path: {scheme}:// URLs cannot be fetched by Replicate, use http(s)"
    if not image_base_url:
        return None, f"invalid image path: {parts.path!r} is relative and IMAGE_BASE_URL is not set"
    return normalised(urlsplit(f"{image_base_url.rstrip('/')}/{path.lstrip('/')}")), None


def normalised(parts: SplitResult) -> str:
    """The URL with its scheme and host in lower case; userinfo, port, path and query as they were."""
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{hostport.lower()}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))


def shown(url: str) -> str:
    """A URL as it may be shown: no userinfo, the query string and fragment cut (`?…` marks a cut query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?")[0].split("#")[0]
    rest = "?…" if parts.query else ""
    if not parts.netloc:  # sqlite:///path keeps its three slashes (urlunsplit would drop two)
        return f"{parts.scheme}://{parts.path}{rest}" if "://" in url else url.split("?")[0].split("#")[0] + rest
    netloc = f"{'[' + host + ']' if ':' in host else host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + rest


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every URL in it `shown` (no credentials, no query) and every one of `secrets` masked.

    A URL is recognised in every form an error quotes it: whole, as requests' `url: /path?query` fragment,
    JSON-escaped or percent-encoded (decoded first), with `user:password@` alone. What remains of a query string
    is `?…`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for escaped, plain in ESCAPES.items():
        text = re.sub(re.escape(escaped), plain, text, flags=re.IGNORECASE)
    text = PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = URL_IN_TEXT.sub(_shown_in_text, text)
    text = QUERY_IN_TEXT.sub("?…", text)
    return USERINFO_IN_TEXT.sub("***@", text)


def _shown_in_text(match: re.Match) -> str:
    """A URL found in text, shown; punctuation that ends the sentence (`url: reason`) stays after it."""
    found = match.group(0)
    url = found.rstrip(".,;:!?)]}")
    return shown(url) + found[len(url) :]
