"""The per-resource daily rollup: ``daily_resource_usage``, one row per local day and resource.

Written by the ``daily_gpu_costs`` refresh of a day that has ended (the nightly refresh of
yesterday, a backfill, a late import; ``INSERT ... SELECT`` in the same transaction as the cost
rows: no usage row reaches Python), and read by the idle rule and rightsizing instead of the raw
hours. The hourly refreshes of today write none: they would be rewritten every hour and never
read. Per local day in ``TIMEZONE`` and resource: cost (exact micro-dollars), GPU-hours, observed
hours and those with a utilization, idle hours below ``IDLE_UTILIZATION_PCT``, the
first/last observed and active hours, the idle tail after the last active hour (rows, cost, start),
the GPU-hour weighted utilization sum, the peak hourly GPU load (max of gpu_count x utilization /
100), the largest gpu_count, and the cost and hours of ``Committed`` rows.

The same query computes those columns for any UTC range (a "segment"): the idle evaluation reads
the window's partial days and the days without a usable rollup row from the raw hours this way,
so both paths share one definition of every column.

The same refresh writes ``daily_resource_spend`` (``spend_rows_query``): the day's spend per
resource, team and model, which the spend-anomaly rule reads for whole past days
(``costs.spend_series``).

A rolled-up day records the ``TIMEZONE`` and ``IDLE_UTILIZATION_PCT`` it was computed with, and
when. ``usable_rollup_days`` accepts a day only when both match the current settings and it was
computed after the day ended (so it saw every hour); any other day is read from the raw rows by
its reader, which gives the same answer more slowly, until the next refresh of the day rewrites
it. A refresh refused by the usage checks drops the day's rollup (``forget_rollup_days``) so a
reader judges those rows itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    Engine,
    Numeric,
    Select,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from heliox_orchestration.db.rollup_schema import (
    daily_resource_spend,
    daily_resource_usage,
    daily_resource_usage_days,
)
from heliox_orchestration.db.schema import gpu_usage_hourly, money_sum_micros

COMMITTED = "Committed"
ROLLUP_TABLES = (daily_resource_usage, daily_resource_spend, daily_resource_usage_days)


@dataclass(frozen=True)
class Segment:
    """UTC hours [start, end) aggregated under ``day`` (a local day, or the part of one)."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime
    whole: bool = True  # the whole local day (False: the part of it inside a window)


def _micros(column_: Any) -> Any:
    """A Money column as integer micro-dollars (exact on SQLite's REAL storage too)."""
    return cast(func.round(column_ * 1_000_000), BigInteger)


def segment_rows_query(
    segments: Sequence[Segment],
    idle_utilization_pct: Decimal,
    resource_ids: Sequence[str] | None = None,
    *,
    tails: bool = True,
    columns: Sequence[str] | None = None,
) -> Select:
    """Per (segment, resource) every rollup column from ``gpu_usage_hourly``; money in
    ``*_micros`` columns. One hash aggregate per (segment, resource) over the segments' hours
    (read through the ``usage_hour`` index) gives the counts and the last active hour; the idle
    tails (the rows after it) come from the same hours' idle rows, hash-joined with the (few)
    groups that end idle. Without ``tails`` the tail columns are left out and only the aggregate
    runs. Callers keep a query to one local day (or a few partial ones): its groups fit in
    memory, where a range of days would be sorted instead (see ``write_rollup``)."""
    u = gpu_usage_hourly
    ordered = sorted(segments, key=lambda s: s.start)
    # Each hour's segment by comparisons in the row (no join: a row meets one small CASE).
    day_key: Any = literal(ordered[-1].day, Date())
    if len(ordered) > 1:
        day_key = case(
            *((u.c.usage_hour < s.end, literal(s.day, Date())) for s in ordered[:-1]), else_=day_key
        )
    hours_query = select(
        day_key.label("day"),
        u.c.resource_id,
        u.c.usage_hour,
        u.c.cost_usd,
        u.c.gpu_count,
        u.c.gpu_utilization_pct,
        u.c.pricing_category,
    ).where(
        or_(*(and_(u.c.usage_hour >= a, u.c.usage_hour < b) for a, b in _ranges(ordered))),
        *([u.c.resource_id.in_(resource_ids)] if resource_ids is not None else []),
    )
    threshold = bindparam("rollup_idle_utilization_pct", idle_utilization_pct, type_=Numeric())
    if not tails:
        names = FIRST_PASS_COLUMNS if columns is None else columns
        grouped = _grouped(hours_query.subquery("segment_hours"), threshold, names)
        return grouped.subquery("grouped").select()
    # The groups once (a CTE named twice is computed once); the hours twice, each time straight
    # from the table, where the planner knows their statistics (a CTE of them has none, and its
    # aggregate would be sorted). Never a scan per resource: with a BRIN index on usage_hour
    # each would read whole block ranges.
    per = _grouped(hours_query.subquery("segment_hours"), threshold, ALL_AGGREGATES).cte("per_segment")
    # Every row of a tail is idle (it comes after the last active hour).
    idle_hours = hours_query.where(u.c.gpu_utilization_pct < threshold).subquery("idle_hours")
    has_tail = or_(per.c.last_active_hour.is_(None), per.c.last_active_hour < per.c.last_observed_hour)
    in_tail = and_(
        idle_hours.c.day == per.c.day,
        idle_hours.c.resource_id == per.c.resource_id,
        or_(per.c.last_active_hour.is_(None), idle_hours.c.usage_hour > per.c.last_active_hour),
    )
    tail = (
        select(
            per.c.day,
            per.c.resource_id,
            func.count().label("rows"),
            money_sum_micros(idle_hours.c.cost_usd).label("cost_micros"),
            func.min(idle_hours.c.usage_hour).label("start"),
        )
        .select_from(idle_hours.join(per, in_tail))
        .where(has_tail)
        .group_by(per.c.day, per.c.resource_id)
        .subquery("tails")
    )
    return select(
        per.c.day,
        per.c.resource_id,
        per.c.cost_micros,
        per.c.gpu_hours,
        per.c.usage_rows,
        per.c.utilization_rows,
        per.c.idle_rows,
        per.c.first_observed_hour,
        per.c.last_observed_hour,
        per.c.first_active_hour,
        per.c.last_active_hour,
        func.coalesce(tail.c.rows, 0).label("tail_idle_rows"),
        func.coalesce(tail.c.cost_micros, 0).label("tail_idle_cost_micros"),
        tail.c.start.label("tail_idle_start"),
        per.c.utilization_x_gpu_hours,
        per.c.utilization_gpu_hours,
        per.c.peak_gpu_load,
        per.c.max_gpu_count,
        per.c.committed_cost_micros,
        per.c.committed_rows,
    ).select_from(per.outerjoin(tail, and_(tail.c.day == per.c.day, tail.c.resource_id == per.c.resource_id)))


def _grouped(rows: Any, threshold: Any, names: Sequence[str]) -> Select:
    """The aggregate columns ``names`` of ``rows`` (a segment's hours) per (day, resource)."""
    is_idle = case((rows.c.gpu_utilization_pct < threshold, 1), else_=0)  # NULL is never idle
    active_hour = case((is_idle == 0, rows.c.usage_hour))
    known = rows.c.gpu_utilization_pct.is_not(None)
    committed = rows.c.pricing_category == COMMITTED
    load = rows.c.gpu_utilization_pct * rows.c.gpu_count
    aggregates = {
        "cost_micros": money_sum_micros(rows.c.cost_usd),
        "gpu_hours": func.sum(rows.c.gpu_count),
        "usage_rows": func.count(),
        "utilization_rows": func.count(rows.c.gpu_utilization_pct),
        "idle_rows": func.sum(is_idle),
        "first_observed_hour": func.min(rows.c.usage_hour),
        "last_observed_hour": func.max(rows.c.usage_hour),
        "first_active_hour": func.min(active_hour),
        "last_active_hour": func.max(active_hour),
        "utilization_x_gpu_hours": func.sum(load),
        "utilization_gpu_hours": func.sum(case((known, rows.c.gpu_count), else_=0)),
        "peak_gpu_load": func.max(load) / literal_column("100.0"),
        "max_gpu_count": func.max(rows.c.gpu_count),
        "committed_cost_micros": func.coalesce(
            func.sum(case((committed, _micros(rows.c.cost_usd)), else_=0)), 0
        ),
        "committed_rows": func.sum(case((committed, 1), else_=0)),
    }
    # The database computes every aggregate it is given: the first pass names only its own.
    return select(rows.c.day, rows.c.resource_id, *(aggregates[n].label(n) for n in names)).group_by(
        rows.c.day, rows.c.resource_id
    )


def _ranges(ordered: Sequence[Segment]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Contiguous UTC ranges of segments sorted by start."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for s in ordered:
        if ranges and ranges[-1][1] == s.start:
            ranges[-1] = (ranges[-1][0], s.end)
        else:
            ranges.append((s.start, s.end))
    return ranges


def stored_rows_query(
    days: Sequence[dt.date], *, tails: bool = True, columns: Sequence[str] | None = None
) -> Select:
    """The stored rollup rows of ``days`` with the columns of ``segment_rows_query``."""
    r = daily_resource_usage.c
    names = SEGMENT_COLUMNS if tails else ["day", "resource_id", *(columns or FIRST_PASS_COLUMNS)]
    return select(*(r[c] for c in names)).where(days_condition(r.day, days))


def days_condition(day: Any, days: Sequence[dt.date]) -> Any:
    """``day`` in ``days`` as ranges of consecutive days (one primary-key range scan each)."""
    runs: list[list[dt.date]] = []
    for d in sorted(days):
        if runs and runs[-1][1] + dt.timedelta(days=1) == d:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return or_(*(day.between(a, b) for a, b in runs)) if runs else day.is_(None)


# What the idle rule's first pass (and the resources that may be findings) read.
FIRST_PASS_COLUMNS = [
    "usage_rows",
    "idle_rows",
    "last_observed_hour",
    "last_active_hour",
    "utilization_x_gpu_hours",
    "utilization_gpu_hours",
    "max_gpu_count",
]
ALL_AGGREGATES = [
    "cost_micros",
    "gpu_hours",
    "usage_rows",
    "utilization_rows",
    "idle_rows",
    "first_observed_hour",
    "last_observed_hour",
    "first_active_hour",
    "last_active_hour",
    "utilization_x_gpu_hours",
    "utilization_gpu_hours",
    "peak_gpu_load",
    "max_gpu_count",
    "committed_cost_micros",
    "committed_rows",
]
SEGMENT_COLUMNS = [
    "day",
    "resource_id",
    "cost_micros",
    "gpu_hours",
    "usage_rows",
    "utilization_rows",
    "idle_rows",
    "first_observed_hour",
    "last_observed_hour",
    "first_active_hour",
    "last_active_hour",
    "tail_idle_rows",
    "tail_idle_cost_micros",
    "tail_idle_start",
    "utilization_x_gpu_hours",
    "utilization_gpu_hours",
    "peak_gpu_load",
    "max_gpu_count",
    "committed_cost_micros",
    "committed_rows",
]


def rollup_rows_query(days: Sequence[dt.date]) -> Select:
    """The hourly rows the rollup of ``days`` stands for (they passed the usage checks)."""
    d = daily_resource_usage_days.c
    return select(func.coalesce(func.sum(d.usage_rows), 0)).where(days_condition(d.day, days))


def spend_rows_query(segment: Segment) -> Select:
    """The spend of one local day per resource, team and model (``costs.spend_series``'s raw
    grouping), for ``daily_resource_spend``."""
    u = gpu_usage_hourly.c
    model = func.nullif(func.trim(u.model_name), "")
    return (
        select(
            literal(segment.day, Date()).label("day"),
            u.resource_id,
            u.team,
            model.label("model_name"),
            money_sum_micros(u.cost_usd).label("cost_micros"),
        )
        .where(u.usage_hour >= segment.start, u.usage_hour < segment.end)
        .group_by(u.resource_id, u.team, model)
    )


def write_rollup(
    conn: Connection,
    segments: Sequence[Segment],
    timezone: str,
    idle_utilization_pct: Decimal,
    computed_at: dt.datetime,
) -> int:
    """Replace the rollup of the local days ``segments`` (whole days) inside the caller's
    transaction; returns the rows written. Only days that ended by ``computed_at`` are rolled
    up: a reader would not accept the rollup of a day still in progress (``usable_rollup_days``),
    so the hourly refreshes of today only drop what an earlier refresh left of it."""
    for table in ROLLUP_TABLES:
        conn.execute(delete(table).where(table.c.day.in_([s.day for s in segments])))
    segments = [s for s in segments if s.end <= computed_at]
    days = [s.day for s in segments]
    if not segments:
        return 0
    names = [c.name for c in daily_resource_usage.columns]
    spend_names = [c.name for c in daily_resource_spend.columns]
    written = 0
    spend_rows: dict[dt.date, int] = {}
    # One statement per day: a day's groups (one per resource) are hashed in memory; the groups
    # of a whole range would not fit work_mem, and PostgreSQL would sort the range's rows instead.
    for segment in segments:
        q = segment_rows_query([segment], idle_utilization_pct).subquery("rollup")
        insert = daily_resource_usage.insert().from_select(names, select(*(q.c[name] for name in names)))
        written += conn.execute(insert).rowcount or 0
        spend = daily_resource_spend.insert().from_select(spend_names, spend_rows_query(segment))
        spend_rows[segment.day] = conn.execute(spend).rowcount or 0
    r = daily_resource_usage.c
    counts = {
        day: (int(resources), int(rows or 0))
        for day, resources, rows in conn.execute(
            select(r.day, func.count(), func.sum(r.usage_rows)).where(r.day.in_(days)).group_by(r.day)
        )
    }
    conn.execute(
        daily_resource_usage_days.insert(),
        [
            {
                "day": s.day,
                "timezone": timezone,
                "idle_utilization_pct": str(idle_utilization_pct),
                "start_utc": s.start,
                "end_utc": s.end,
                "resources": counts.get(s.day, (0, 0))[0],
                "usage_rows": counts.get(s.day, (0, 0))[1],
                "computed_at": computed_at,
                "spend_rows": spend_rows[s.day],
            }
            for s in segments
        ],
    )
    return written


def forget_rollup_days(engine: Engine, first: dt.date, last: dt.date) -> None:
    """Drop the rollup of the days ``first`` through ``last``: their usage rows failed a check,
    so readers must judge those hours from the raw rows (and withhold what fails)."""
    with engine.begin() as conn:
        for table in ROLLUP_TABLES:
            conn.execute(delete(table).where(table.c.day.between(first, last)))


def usable_rollup_days(
    conn: Connection, segments: Sequence[Segment], timezone: str, idle_utilization_pct: Decimal
) -> set[dt.date]:
    """The days of ``segments`` (whole local days) whose stored rollup can stand in for the raw
    rows: computed in ``timezone`` with ``idle_utilization_pct``, with the same UTC bounds, and
    after the day ended."""
    if not segments:
        return set()
    d = daily_resource_usage_days.c
    wanted = {s.day: s for s in segments}
    rows = conn.execute(
        select(d.day, d.timezone, d.idle_utilization_pct, d.start_utc, d.end_utc, d.computed_at).where(
            d.day.in_(list(wanted))
        )
    ).all()
    usable = set()
    for day, tz, pct, start, end, computed_at in rows:
        s = wanted[day]
        if (
            tz == timezone
            and Decimal(pct) == idle_utilization_pct
            and (start, end) == (s.start, s.end)
            and computed_at >= end
        ):
            usable.add(day)
    return usable
