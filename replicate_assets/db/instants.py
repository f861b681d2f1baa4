"""Timestamps as instants: naive UTC datetimes, whatever type and format the shop stores them in.

Laravel writes `2025-01-15 10:30:45` (in the app's time zone, UTC by default) into `timestamp`, `timestamptz`,
MySQL `datetime`/`timestamp` or SQLite text columns. Sessions are pinned to UTC (see engine.py), so values come
back as naive UTC, aware datetimes (PostgreSQL `timestamptz`), or text (SQLite): all become naive UTC here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

TEXT_STAMP = re.compile(r"(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d(?::\d\d(?:\.\d+)?)?))?\s*(Z|[+-]\d\d(?::?\d\d)?)?")


def utcnow() -> dt.datetime:
    """Now, as naive UTC to the second (what our timestamp columns hold)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def precise_now() -> dt.datetime:
    """Now, as naive UTC to the microsecond (to tell apart changes made within one second)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def as_instant(value: Any) -> dt.datetime | None:
    """A stored timestamp as naive UTC; None for NULL or a value that is not a timestamp."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return naive_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        match = TEXT_STAMP.fullmatch(value.strip())
        if not match:
            return None
        day, clock, zone = match.groups()
        clock = clock or "00:00:00"
        if len(clock) == 5:
            clock += ":00"
        if zone == "Z":
            zone = "+00:00"
        elif zone and len(zone) == 3:
            zone += ":00"
        elif zone and ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:]}"
        whole, _, fraction = clock.partition(".")
        text = f"{day}T{whole}" + (f".{fraction[:6].ljust(6, '0')}" if fraction else "") + (zone or "")
        try:
            return naive_utc(dt.datetime.fromisoformat(text))
        except ValueError:
            return None
    return None
