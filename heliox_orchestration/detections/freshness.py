"""Is cost data arriving? Plain functions behind the stale-data sensor."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Connection, Engine, and_, func, select

from heliox_orchestration.cron import parse_cron
from heliox_orchestration.db.schema import gpu_usage_hourly


def newest_usage_hour(engine: Engine, now: dt.datetime) -> dt.datetime | None:
    """The newest ``usage_hour`` that has begun (``newest_usage_hour_before``: a few small index
    ranges, whatever the table's size). A row dated after now is no sign of data arriving: one row
    of 2099 would otherwise make the data look fresh forever (``daily_gpu_costs:no_future_usage``
    names such rows)."""
    with engine.connect() as conn:
        return newest_usage_hour_before(conn, now, inclusive=True)


# Where ``newest_usage_hour_before`` looks, nearest first: each a range ending at ``end``.
NEWEST_HOUR_SPANS = (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=8), dt.timedelta(days=40))


def newest_usage_hour_before(
    conn: Connection, end: dt.datetime, *, inclusive: bool = False
) -> dt.datetime | None:
    """The newest ``usage_hour`` before ``end`` (or at it, ``inclusive``), from the nearest range
    that has a row: the last hour, then the last day, 8 days, 40 days, then everything earlier.
    A max over every hour before ``end`` would read the whole history on PostgreSQL, whose only
    index on usage_hour is a BRIN (no order); a bounded range reads only its block ranges."""
    u = gpu_usage_hourly.c
    upper = u.usage_hour <= end if inclusive else u.usage_hour < end
    for span in NEWEST_HOUR_SPANS:
        in_span = and_(u.usage_hour >= end - span, upper)
        newest = conn.execute(select(func.max(u.usage_hour)).where(in_span)).scalar_one()
        if newest is not None:
            return cast(dt.datetime, newest)
    earlier = u.usage_hour < end - NEWEST_HOUR_SPANS[-1]
    return cast(dt.datetime | None, conn.execute(select(func.max(u.usage_hour)).where(earlier)).scalar_one())


def data_age(newest: dt.datetime | None, now: dt.datetime) -> dt.timedelta | None:
    """How long ago the newest hour of data ended; None when there is no data at all."""
    return None if newest is None else now - (newest + dt.timedelta(hours=1))


def is_stale(newest: dt.datetime | None, now: dt.datetime, stale_hours: int) -> bool:
    age = data_age(newest, now)
    return age is None or age > dt.timedelta(hours=stale_hours)


def cron_hours(cron: str) -> set[int]:
    """The hours a cron string fires in: '0 8-20 * * *' -> 8..20, '@hourly' -> every hour."""
    return set(parse_cron(cron).hours)
