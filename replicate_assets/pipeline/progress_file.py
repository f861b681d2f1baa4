"""The plain progress log, in the Laravel version's format: `[2025-01-15 10:30:45] Indexed ProductImage #34 ...`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path


def indexed_line(product_image_id: int, product_id: int) -> str:
    return f"Indexed ProductImage #{product_image_id} for Product #{product_id}"


def failed_line(product_image_id: int, error: str) -> str:
    return f"Failed ProductImage #{product_image_id} - error: {error}"


class ProgressFile:
    """Appends one timestamped line per image outcome to a file (REPLICATE_EMBEDDINGS_LOG)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, messages: Iterable[str]) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(f"[{stamp}] {message}\n" for message in messages)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log:
            log.write(text)
