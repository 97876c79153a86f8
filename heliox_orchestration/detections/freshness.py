"""Is cost data arriving? Plain functions behind the stale-data sensor."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from heliox_orchestration.cron import parse_cron
from heliox_orchestration.db.usage_store import newest_usage_hour_before


def newest_usage_hour(engine: Engine, now: dt.datetime) -> dt.datetime | None:
    """The newest ``usage_hour`` that has begun (``newest_usage_hour_before``: a few small index
    ranges, whatever the table's size). A row dated after now is no sign of data arriving: one row
    of 2099 would otherwise make the data look fresh forever (``daily_gpu_costs:no_future_usage``
    names such rows)."""
    with engine.connect() as conn:
        return newest_usage_hour_before(conn, now, inclusive=True)


def data_age(newest: dt.datetime | None, now: dt.datetime) -> dt.timedelta | None:
    """How long ago the newest hour of data ended; None when there is no data at all."""
    return None if newest is None else now - (newest + dt.timedelta(hours=1))


def is_stale(newest: dt.datetime | None, now: dt.datetime, stale_hours: int) -> bool:
    age = data_age(newest, now)
    return age is None or age > dt.timedelta(hours=stale_hours)


def cron_hours(cron: str) -> set[int]:
    """The hours a cron string fires in: '0 8-20 * * *' -> 8..20, '@hourly' -> every hour."""
    return set(parse_cron(cron).hours)
