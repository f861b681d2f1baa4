"""Timestamps become naive UTC instants whatever the shop stores: aware datetimes, Laravel text, ISO text."""

import datetime as dt

import pytest

from replicate_assets.chain import day_ranges
from replicate_assets.db.instants import as_instant

UTC_10_30 = dt.datetime(2025, 1, 15, 10, 30, 45)


@pytest.mark.parametrize(
    "value, expected",
    [
        (UTC_10_30, UTC_10_30),
        (dt.datetime(2025, 1, 15, 5, 30, 45, tzinfo=dt.timezone(dt.timedelta(hours=-5))), UTC_10_30),
        ("2025-01-15 10:30:45", UTC_10_30),
        ("2025-01-15T10:30:45Z", UTC_10_30),
        ("2025-01-15 12:30:45+02:00", UTC_10_30),
        ("2025-01-15 10:30:45.000000", UTC_10_30),
        ("2025-01-15 10:30:45.5", UTC_10_30 + dt.timedelta(microseconds=500000)),
        ("2025-01-15", dt.datetime(2025, 1, 15)),
        (dt.date(2025, 1, 15), dt.datetime(2025, 1, 15)),
        (b"2025-01-15 10:30:45", UTC_10_30),
        ("not a date", None),
        (None, None),
    ],
)
def test_instants(value, expected):
    assert as_instant(value) == expected


def test_day_ranges_join_contiguous_days_inside_the_bounds():
    days = [dt.date(2025, 1, d) for d in (1, 2, 3, 5, 7, 8)] + [dt.date(2019, 1, 1)]
    assert day_ranges(days, dt.date(2020, 1, 1), dt.date(2025, 1, 7)) == [
        ("2025-01-01", "2025-01-03"),
        ("2025-01-05", "2025-01-05"),
        ("2025-01-07", "2025-01-07"),
    ]
