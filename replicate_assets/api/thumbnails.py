"""Pictures for the page, by `product_image_id`: the server reads the image's path from the shop's table, turns it
into a URL by the pipeline's rules (http(s) only, IMAGE_BASE_URL for relative paths) and fetches it: at most
MAX_BYTES, an image content type, TIMEOUT seconds. The last ones are kept in memory (CACHE_BYTES in all). A browser
never sees an image's URL, so a signed storage URL stays on the server; and nothing a user types is fetched."""

from __future__ import annotations

import threading
from collections import OrderedDict

import requests

from replicate_assets.db.browse import Browse
from replicate_assets.urls import resolve_image_url, url_hash

MAX_BYTES = 10 * 1024 * 1024
TIMEOUT = 10.0
CACHE_BYTES = 64 * 1024 * 1024


class ThumbnailError(Exception):
    """The picture cannot be shown; `status` is the HTTP status to answer (404: no such image, 502: its host)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Thumbnails:
    def __init__(self, browse: Browse, image_base_url: str | None):
        self.browse, self.image_base_url = browse, image_base_url
        self.session = requests.Session()
        self._cache: OrderedDict[tuple[int, str], tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, image_id: int) -> tuple[bytes, str]:
        """(bytes, content type) of the image; ThumbnailError when it cannot be shown."""
        try:
            path = self.browse.image_path(image_id)
        except LookupError:
            raise ThumbnailError(404, f"no product image {image_id}") from None
        url, reason = resolve_image_url(path, self.image_base_url)
        if url is None:
            raise ThumbnailError(404, f"product image {image_id} cannot be shown: {reason}")
        key = (image_id, url_hash(url))  # a changed path is fetched again
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self._fetch(image_id, url)
        with self._lock:
            self._cache[key] = found
            self._size += len(found[0])
            while self._size > CACHE_BYTES and self._cache:
                self._size -= len(self._cache.popitem(last=False)[1][0])
        return found

    def _fetch(self, image_id: int, url: str) -> tuple[bytes, str]:
        where = f"product image {image_id}"  # never its URL: it may be signed
        try:
            with self.session.get(url, stream=True, timeout=TIMEOUT) as response:
                if response.status_code != 200:
                    raise ThumbnailError(502, f"{where}: its host answered HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not kind.startswith("image/"):
                    raise ThumbnailError(502, f"{where}: its host sent {kind or 'no content type'}, not an image")
                body = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise ThumbnailError(502, f"{where} is larger than {MAX_BYTES // 1024 // 1024} MB")
        except requests.Timeout:
            raise ThumbnailError(502, f"{where}: its host did not answer within {TIMEOUT:g} s") from None
        except requests.RequestException:
            raise ThumbnailError(502, f"{where}: its host cannot be reached") from None
        return bytes(body), kind
