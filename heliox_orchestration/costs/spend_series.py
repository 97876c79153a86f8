"""The spend series the anomaly rule reads (``detections/anomaly.py``): a day and the 28 days
before it, each day cut to the same local hours. Whole past days come from the daily rollup
(``daily_resource_spend``, written by the ``daily_gpu_costs`` refresh); today so far, the same
hours of the history days, and days without a usable rollup from one bounded query over
``gpu_usage_hourly``.

For a complete day every window is the whole local day (23-25 hours). For today, the window
ends after today's latest usage hour, and each earlier day's window ends at the same local wall
clock time, so 14:00 today is compared with 00:00-14:00 of the baseline days. Sums are integer
micro-dollars (``money_sum_micros``), grouped by day, team, model and resource, so the fleet,
model, team and resource series all come from the same rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, Engine, Select, and_, column, func, or_, select, values

from heliox_orchestration.costs.common import as_int, model_label
from heliox_orchestration.costs.rollup import days_condition
from heliox_orchestration.db.rollup_schema import daily_resource_spend, daily_resource_usage_days
from heliox_orchestration.db.schema import UTCDateTime, gpu_usage_hourly, money_sum_micros
from heliox_orchestration.detections.anomaly import FLEET, MODEL, TEAM, TOTAL, WEEKS, SeriesKey
from heliox_orchestration.partitions import local_day_bounds

HISTORY_DAYS = WEEKS * 7
HOUR = dt.timedelta(hours=1)


def history_range(day: dt.date) -> tuple[dt.date, dt.date]:
    """The local days the evaluation of ``day`` reads: the 28 before it and itself."""
    return day - dt.timedelta(days=HISTORY_DAYS), day


@dataclass
class SpendSeries:
    """Micro-dollars per day of each (dimension, value) and of each resource with its team and
    model, over the windows of ``windows``."""

    windows: dict[dt.date, tuple[dt.datetime, dt.datetime]]
    partial_until: dt.datetime | None  # UTC end of today's window; None: whole days
    series: dict[SeriesKey, dict[dt.date, int]] = field(default_factory=dict)
    # (resource, team, model label) -> day -> micros
    resources: dict[tuple[str, str | None, str], dict[dt.date, int]] = field(default_factory=dict)
    days_with_data: set[dt.date] = field(default_factory=set)

    def resources_of(self, dimension: str, value: str) -> dict[str, dict[dt.date, int]]:
        """Each resource's spend per day within one series (a resource that moved between teams
        or models counts only its rows of this value)."""
        out: dict[str, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
        for (rid, team, model), by_day in self.resources.items():
            if (dimension == TEAM and team != value) or (dimension == MODEL and model != value):
                continue
            for day, micros in by_day.items():
                out[rid][day] += micros
        return {rid: dict(by_day) for rid, by_day in out.items()}


def latest_hour_end(engine: Engine, day: dt.date, timezone: str, now: dt.datetime) -> dt.datetime | None:
    """The end of the latest usage hour of ``day`` that has started by ``now``; None: no rows."""
    start, end = local_day_bounds(day, timezone)
    u = gpu_usage_hourly.c
    query = select(func.max(u.usage_hour)).where(u.usage_hour >= start, u.usage_hour < min(end, now))
    with engine.connect() as conn:
        last = conn.execute(query).scalar()
    return None if last is None else min(last + HOUR, end)


def windows_of(
    day: dt.date, timezone: str, partial_until: dt.datetime | None
) -> dict[dt.date, tuple[dt.datetime, dt.datetime]]:
    """The UTC window of ``day`` and of each of its history days, cut at the same local time."""
    tz = ZoneInfo(timezone)
    first, _ = history_range(day)
    days = [first + dt.timedelta(days=n) for n in range(HISTORY_DAYS + 1)]
    cut = partial_until.astimezone(tz).time() if partial_until is not None else None
    windows = {}
    for d in days:
        start, end = local_day_bounds(d, timezone)
        if cut is not None and cut != dt.time():
            end = min(end, dt.datetime.combine(d, cut, tz).astimezone(dt.UTC))
        windows[d] = (start, end)
    return windows


def usable_spend_days(
    conn: Connection, windows: dict[dt.date, tuple[dt.datetime, dt.datetime]], timezone: str
) -> list[dt.date]:
    """The days whose window is the whole local day and whose stored spend rollup stands for it:
    rolled up in ``timezone`` with the same UTC bounds, after the day ended, with its spend rows
    (days rolled up before ``daily_resource_spend`` existed have none). Any other day is read
    from the raw rows, until the next refresh of the day rewrites its rollup."""
    d = daily_resource_usage_days.c
    rows = conn.execute(
        select(d.day, d.timezone, d.start_utc, d.end_utc, d.computed_at).where(
            days_condition(d.day, list(windows)), d.spend_rows.is_not(None)
        )
    ).all()
    return sorted(
        day
        for day, tz, start, end, computed_at in rows
        if tz == timezone and (start, end) == windows[day] and computed_at >= end
    )


def check_ranges(
    engine: Engine, first: dt.date, last: dt.date, timezone: str
) -> tuple[list[tuple[dt.datetime, dt.datetime]], list[dt.date]]:
    """(UTC ranges whose raw hours the evaluations of ``first``..``last`` read, the days they
    read from the rollup instead): a rolled-up day passed the usage checks when its refresh wrote
    it (a refused refresh drops it), so the input check scans only the hours read raw."""
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    windows = {d: local_day_bounds(d, timezone) for d in days}
    with engine.connect() as conn:
        rolled = set(usable_spend_days(conn, windows, timezone))
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for d in days:
        if d in rolled:
            continue
        start, end = windows[d]
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges, sorted(rolled)


def _raw_query(windows: dict[dt.date, tuple[dt.datetime, dt.datetime]]) -> Select:
    """Spend per day, resource, team and model from the raw hours of ``windows``."""
    bounds = (
        values(column("day", Date), column("start_utc", UTCDateTime()), column("end_utc", UTCDateTime()))
        .data([(d, start, end) for d, (start, end) in windows.items()])
        .cte("windows")
    )
    u = gpu_usage_hourly
    # One index range per run of consecutive days (the whole history when nothing is rolled up).
    runs: list[list[dt.date]] = []
    for d in sorted(windows):
        if runs and runs[-1][-1] + dt.timedelta(days=1) == d:
            runs[-1].append(d)
        else:
            runs.append([d])
    in_runs = or_(
        *(and_(u.c.usage_hour >= windows[run[0]][0], u.c.usage_hour < windows[run[-1]][1]) for run in runs)
    )
    model = func.nullif(func.trim(u.c.model_name), "")
    return (
        select(
            bounds.c.day,
            u.c.resource_id,
            u.c.team,
            model.label("model_name"),
            money_sum_micros(u.c.cost_usd).label("cost_micros"),
        )
        .select_from(
            bounds.join(u, and_(u.c.usage_hour >= bounds.c.start_utc, u.c.usage_hour < bounds.c.end_utc))
        )
        .where(in_runs)
        .group_by(bounds.c.day, u.c.resource_id, u.c.team, model)
    )


def load_spend_series(
    engine: Engine,
    day: dt.date,
    timezone: str,
    partial_until: dt.datetime | None = None,
    *,
    use_rollup: bool = True,
) -> SpendSeries:
    """The spend of ``day`` (until ``partial_until`` when set) and of its 28 history days: whole
    days from the daily rollup where it stands for them (``usable_spend_days``), the rest (today
    so far and the same hours of the history days, days not rolled up) from the raw hours, with
    the same grouping, so both give the same numbers."""
    windows = windows_of(day, timezone, partial_until)
    spend = daily_resource_spend.c
    rows: list[Any] = []  # Row of (day, resource_id, team, model_name, cost_micros)
    with engine.connect() as conn:
        rolled = usable_spend_days(conn, windows, timezone) if use_rollup else []
        if rolled:
            stored = select(spend.day, spend.resource_id, spend.team, spend.model_name, spend.cost_micros)
            rows += conn.execute(stored.where(days_condition(spend.day, rolled))).all()
        raw = {d: w for d, w in windows.items() if d not in set(rolled)}
        if raw:
            rows += conn.execute(_raw_query(raw)).all()
    result = SpendSeries(windows, partial_until)
    series: dict[SeriesKey, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    resources: dict[tuple[str, str | None, str], dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        micros, label = as_int(r.cost_micros), model_label(r.model_name)
        result.days_with_data.add(r.day)
        series[(TOTAL, FLEET)][r.day] += micros
        series[(MODEL, label)][r.day] += micros
        if r.team is not None and r.team.strip():
            series[(TEAM, r.team)][r.day] += micros
        resources[(r.resource_id, r.team, label)][r.day] += micros
    result.series = {k: dict(v) for k, v in series.items()}
    result.resources = {k: dict(v) for k, v in resources.items()}
    return result
