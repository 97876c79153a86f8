"""The one partitions definition of Heliox: local calendar days in ``TIMEZONE``."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import DailyPartitionsDefinition, Failure

from heliox_orchestration.settings import Settings

# The run tag Dagster puts on a run of one partition.
PARTITION_TAG = "dagster/partition"


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    # end_offset=1: today is a partition too, because the burn-rate check watches today's spend.
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        timezone=settings.timezone,
        end_offset=1,
    )


def local_day_bounds(day: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """UTC [start, end) of a local calendar day: 23, 24 or 25 hours across DST changes.

    Both bounds are converted to UTC here: an aware local bound handed to SQLite loses its
    offset, and subtracting two datetimes that share one ZoneInfo gives wall-clock, not
    elapsed, time.
    """
    tz = ZoneInfo(timezone)
    start = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    return start, end


def local_range_bounds(first: dt.date, last: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """UTC [start, end) covering the local days ``first`` through ``last`` inclusive."""
    return local_day_bounds(first, timezone)[0], local_day_bounds(last, timezone)[1]


def parse_day(value: str | None, name: str) -> dt.date | None:
    """A local day from run config (``YYYY-MM-DD``), or None when unset. A malformed value fails
    the step, not retried: the run config must be fixed."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Failure(f"{name}={value!r} is not a date; use YYYY-MM-DD.", allow_retries=False) from None


def local_days_of(first_hour: dt.datetime, last_hour: dt.datetime, timezone: str) -> tuple[dt.date, dt.date]:
    """The local days (inclusive) of the UTC hours ``first_hour``..``last_hour`` (hour starts)."""
    tz = ZoneInfo(timezone)
    return first_hour.astimezone(tz).date(), last_hour.astimezone(tz).date()


def merge_day_spans(spans: list[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    """Overlapping or adjacent spans of days merged, in order."""
    merged: list[tuple[dt.date, dt.date]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
