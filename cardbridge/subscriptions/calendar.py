"""Billing dates: one interval after another, the way a billing system counts them.

Months and years keep the anchor day (a subscription billed on the 31st is billed on the last
day of shorter months and on the 31st again after them, as Stripe does) and the hour of day.
When the import named a time zone, the hour is kept on the local clock across daylight-saving
changes; otherwise (an explicit offset or epoch seconds) the hour is kept in UTC.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

DAYS_PER_MONTH = 365.0 / 12


def local(moment: datetime, zone: str | None) -> datetime:
    return moment.astimezone(ZoneInfo(zone)) if zone else moment.astimezone(UTC)


def anchor_day(moment: datetime, zone: str | None, given: int | None) -> int:
    """The day of month the legacy billing is anchored on: the file's, else the moment's."""
    return given or local(moment, zone).day


def add_intervals(moment: datetime, interval: str, count: int, times: int, *,
                  day: int | None = None, zone: str | None = None) -> datetime:
    """`moment` moved on by `times` × `count` `interval`s (month and year keep `day`)."""
    start = local(moment, zone)
    if interval in ("month", "year"):
        months = count * times * (12 if interval == "year" else 1)
        index = start.year * 12 + start.month - 1 + months
        year, month = divmod(index, 12)
        month += 1
        last = calendar.monthrange(year, month)[1]
        moved = start.replace(year=year, month=month, day=min(day or start.day, last))
    else:
        days = count * times * (7 if interval == "week" else 1)
        moved = start.replace(tzinfo=None) + timedelta(days=days)
        moved = moved.replace(tzinfo=start.tzinfo)
    if zone:  # the same wall-clock time there (fold 0 where a clock change repeats it)
        moved = moved.replace(tzinfo=ZoneInfo(zone), fold=0)
    return moved.astimezone(UTC)


def first_at_or_after(moment: datetime, earliest: datetime, interval: str, count: int, *,
                      day: int | None = None, zone: str | None = None,
                      limit: int = 1000) -> tuple[datetime, int]:
    """The first billing date of the series starting at `moment` that is not before `earliest`,
    and how many intervals on it is (0: `moment` itself)."""
    for times in range(limit):
        candidate = add_intervals(moment, interval, count, times, day=day, zone=zone) \
            if times else moment
        if candidate >= earliest:
            return candidate, times
    raise ValueError("no billing date within a thousand intervals")


def monthly(amount: int, interval: str, count: int) -> int:
    """A recurring amount as monthly recurring revenue (minor units, rounded)."""
    per = {"month": 1.0, "year": 12.0, "week": 7 / DAYS_PER_MONTH, "day": 1 / DAYS_PER_MONTH}
    return round(amount / (per[interval] * count))
