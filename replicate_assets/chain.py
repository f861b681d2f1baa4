"""The chain of assets by key, in order, and the command that runs it: one definition for every caller."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable
from pathlib import Path

CHAIN_KEYS = ("product_images", "clip_embeddings", "embedding_table")
SELECTION = ",".join(CHAIN_KEYS)


def materialize_command(first: str, last: str) -> list[str]:
    """`dagster asset materialize` of the whole chain over the days first...last (one run)."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    span = ["--partition", first] if first == last else ["--partition-range", f"{first}...{last}"]
    return [dagster, "asset", "materialize", "-m", "replicate_assets", "--select", SELECTION, *span]


def shell_line(command: list[str]) -> str:
    """The command as a user would type it."""
    return " ".join(["dagster", *command[1:]])


def day_ranges(
    days: Iterable[dt.date], first: dt.date | None = None, last: dt.date | None = None
) -> list[tuple[str, str]]:
    """Contiguous runs of `days` between `first` and `last` (inclusive), as (first, last) partition keys."""
    keys = sorted({d for d in days if (first is None or d >= first) and (last is None or d <= last)})
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in keys:
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return [(a.isoformat(), b.isoformat()) for a, b in ranges]
