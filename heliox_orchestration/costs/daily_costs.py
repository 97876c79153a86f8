"""Daily GPU cost aggregates: one row per (local day, provider, GPU type, model).

The database does the work: the day bounds are computed in Python (in UTC, 23/24/25 hours) and
joined as a small VALUES table, so one indexed ``usage_hour >= :start AND usage_hour < :end``
scan plus ``GROUP BY`` returns aggregates for one day or a whole backfill range. Raw usage rows
never reach pandas.

Money: ``money_sum_micros`` sums integer micro-dollars in SQL, which is exact on SQLite's REAL
storage and on PostgreSQL's NUMERIC alike; frames carry ``cost_micros`` (int) for arithmetic and
``cost_usd`` (``Decimal``) for display and storage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import Date, Engine, Select, and_, case, column, delete, func, select, values

from heliox_orchestration.costs.common import (
    NotMaterializedError,
    as_int,
    dollars_to_micros,
    fetch_frame,
    records_of,
)
from heliox_orchestration.costs.rollup import Segment, write_rollup
from heliox_orchestration.db.schema import (
    UTCDateTime,
    daily_gpu_cost_days,
    daily_gpu_costs,
    gpu_usage_hourly,
    money_sum_micros,
)
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.partitions import local_day_bounds

ROW_COLUMNS = [
    "day",
    "provider",
    "gpu_type",
    "model_name",
    "cost_micros",
    "cost_usd",
    "gpu_hours",
    "avg_utilization_pct",
    "usage_rows",
    "last_usage_hour",
]
DAY_COLUMNS = [
    "day",
    "start_utc",
    "end_utc",
    "hours_in_day",
    "has_data",
    "cost_micros",
    "cost_usd",
    "gpu_hours",
    "usage_rows",
    "last_usage_hour",
]


@dataclass(frozen=True)
class LocalDay:
    """A local calendar day and its UTC bounds [start, end)."""

    day: dt.date
    start: dt.datetime
    end: dt.datetime

    @property
    def hours(self) -> int:
        # Both bounds are UTC, so this is elapsed time: 23 or 25 on DST change days.
        return int((self.end - self.start) / dt.timedelta(hours=1))


def local_days(first: dt.date, last: dt.date, timezone: str) -> tuple[LocalDay, ...]:
    if last < first:
        raise ValueError(f"empty day range: {first} to {last}")
    count = (last - first).days + 1
    days = (first + dt.timedelta(days=i) for i in range(count))
    return tuple(LocalDay(day, *local_day_bounds(day, timezone)) for day in days)


def daily_costs_query(days: Sequence[LocalDay]) -> Select:
    """The one aggregate query of daily costs, for one day or a contiguous range of days."""
    bounds = (
        values(
            column("day", Date),
            column("start_utc", UTCDateTime()),
            column("end_utc", UTCDateTime()),
            name="local_days",
        )
        .data([(d.day, d.start, d.end) for d in days])
        .cte("local_days")
    )
    u = gpu_usage_hourly
    in_day = and_(u.c.usage_hour >= bounds.c.start_utc, u.c.usage_hour < bounds.c.end_utc)
    rows = (
        select(
            bounds.c.day,
            u.c.provider,
            u.c.gpu_type,
            # A blank model name is as unattributed as a NULL one.
            func.nullif(func.trim(u.c.model_name), "").label("model_name"),
            u.c.usage_hour,
            u.c.cost_usd,
            u.c.gpu_count,
            u.c.gpu_utilization_pct,
        )
        .select_from(bounds.join(u, in_day))
        # The outer range lets the planner use the usage_hour index even before the join.
        .where(u.c.usage_hour >= days[0].start, u.c.usage_hour < days[-1].end)
        .subquery("usage_in_days")
    )
    known = rows.c.gpu_utilization_pct.is_not(None)
    return (
        select(
            rows.c.day,
            rows.c.provider,
            rows.c.gpu_type,
            rows.c.model_name,
            money_sum_micros(rows.c.cost_usd).label("cost_micros"),
            func.sum(rows.c.gpu_count).label("gpu_hours"),
            func.sum(rows.c.gpu_utilization_pct * rows.c.gpu_count).label("utilization_x_gpus"),
            func.sum(case((known, rows.c.gpu_count), else_=0)).label("utilization_gpu_hours"),
            func.count().label("usage_rows"),
            func.max(rows.c.usage_hour).label("last_usage_hour"),
        )
        .group_by(rows.c.day, rows.c.provider, rows.c.gpu_type, rows.c.model_name)
        .order_by(rows.c.day, rows.c.provider, rows.c.gpu_type, rows.c.model_name)
    )


@dataclass(frozen=True)
class DailyCosts:
    """Cost aggregates of a set of local days; ``rows`` has ``ROW_COLUMNS``."""

    timezone: str
    days: tuple[LocalDay, ...]
    rows: pd.DataFrame

    @property
    def first(self) -> dt.date:
        return self.days[0].day

    @property
    def last(self) -> dt.date:
        return self.days[-1].day

    def day_totals(self) -> pd.DataFrame:
        """One row per day (``DAY_COLUMNS``), days without any usage row included as gaps."""

        groups = dict(iter(self.rows.groupby("day", sort=False))) if len(self.rows) else {}
        records = [_day_record(d, groups.get(d.day)) for d in self.days]
        return pd.DataFrame(records, columns=DAY_COLUMNS, dtype=object)

    def for_days(self, first: dt.date, last: dt.date) -> DailyCosts:
        days = tuple(d for d in self.days if first <= d.day <= last)
        return DailyCosts(self.timezone, days, self._rows_of({d.day for d in days}))

    def merged_with(self, other: DailyCosts) -> DailyCosts:
        """Both sets of days (``other`` wins where they overlap), in day order."""

        if other.timezone != self.timezone:
            raise ValueError(f"cannot merge days of {self.timezone} and {other.timezone}")
        by_day = {d.day: d for d in self.days} | {d.day: d for d in other.days}
        mine = self._rows_of({d.day for d in self.days} - {d.day for d in other.days})
        rows = pd.concat([frame for frame in (mine, other.rows) if len(frame)] or [mine])
        rows = rows.sort_values(["day", "provider", "gpu_type"], kind="stable").reset_index(drop=True)
        return DailyCosts(self.timezone, tuple(by_day[day] for day in sorted(by_day)), rows)

    def _rows_of(self, days: set[dt.date]) -> pd.DataFrame:
        return self.rows[self.rows["day"].isin(days)].reset_index(drop=True)


def _day_record(day: LocalDay, group: pd.DataFrame | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "day": day.day,
        "start_utc": day.start,
        "end_utc": day.end,
        "hours_in_day": day.hours,
        "has_data": group is not None,
    }
    if group is None:
        empty = {"cost_micros": 0, "cost_usd": micros_to_dollars(0), "gpu_hours": 0, "usage_rows": 0}
        return record | empty | {"last_usage_hour": None}
    micros = int(group["cost_micros"].sum())
    return record | {
        "cost_micros": micros,
        "cost_usd": micros_to_dollars(micros),
        "gpu_hours": int(group["gpu_hours"].sum()),
        "usage_rows": int(group["usage_rows"].sum()),
        "last_usage_hour": max(group["last_usage_hour"]),
    }


def _frame_from_query_rows(raw: pd.DataFrame) -> pd.DataFrame:

    records = []
    for r in records_of(raw):
        micros, known_gpu_hours = as_int(r["cost_micros"]), as_int(r["utilization_gpu_hours"])
        records.append(
            {
                **{k: r[k] for k in ("day", "provider", "gpu_type", "model_name", "last_usage_hour")},
                "cost_micros": micros,
                "cost_usd": micros_to_dollars(micros),
                "gpu_hours": as_int(r["gpu_hours"]),
                "avg_utilization_pct": (
                    round(float(r["utilization_x_gpus"]) / known_gpu_hours, 2) if known_gpu_hours else None
                ),
                "usage_rows": as_int(r["usage_rows"]),
            }
        )
    return pd.DataFrame(records, columns=ROW_COLUMNS, dtype=object)


def compute_daily_costs(engine: Engine, first: dt.date, last: dt.date, timezone: str) -> DailyCosts:
    """Aggregate ``gpu_usage_hourly`` for the local days ``first`` through ``last``."""

    days = local_days(first, last, timezone)
    with engine.connect() as conn:
        raw = fetch_frame(conn, daily_costs_query(days))
    if raw.empty:
        return DailyCosts(timezone, days, pd.DataFrame(columns=ROW_COLUMNS, dtype=object))
    return DailyCosts(timezone, days, _frame_from_query_rows(raw))


def write_daily_costs(
    engine: Engine, costs: DailyCosts, computed_at: dt.datetime, idle_utilization_pct: Decimal | None = None
) -> int:
    """Replace the stored rows of ``costs.days`` in one transaction; returns rows written. With
    ``idle_utilization_pct``, the per-resource rollup of those days too (``costs.rollup``), in
    the same transaction."""
    # cost_micros is the frame's arithmetic column; the tables store cost_usd (Money).
    rows = [
        {**{k: v for k, v in r.items() if k != "cost_micros"}, "computed_at": computed_at}
        for r in records_of(costs.rows)
    ]
    days = [
        {
            **{k: v for k, v in d.items() if k != "cost_micros"},
            "timezone": costs.timezone,
            "computed_at": computed_at,
        }
        for d in records_of(costs.day_totals())
    ]
    with engine.begin() as conn:
        for table in (daily_gpu_costs, daily_gpu_cost_days):
            conn.execute(delete(table).where(table.c.day.between(costs.first, costs.last)))
        if rows:
            conn.execute(daily_gpu_costs.insert(), rows)
        conn.execute(daily_gpu_cost_days.insert(), days)
        if idle_utilization_pct is not None:
            segments = [Segment(d.day, d.start, d.end) for d in costs.days]
            write_rollup(conn, segments, costs.timezone, idle_utilization_pct, computed_at)
    return len(rows)


def load_daily_costs(
    engine: Engine, first: dt.date, last: dt.date, timezone: str
) -> tuple[DailyCosts | None, tuple[dt.date, ...]]:
    """The materialized days of ``first`` through ``last`` and the days that are missing
    (never materialized, or materialized under another ``TIMEZONE``)."""

    wanted = local_days(first, last, timezone)
    with engine.connect() as conn:
        stored = conn.execute(
            select(daily_gpu_cost_days.c.day).where(
                daily_gpu_cost_days.c.day.between(first, last),
                daily_gpu_cost_days.c.timezone == timezone,
            )
        ).scalars()
        materialized = set(stored)
        t = daily_gpu_costs
        raw = fetch_frame(
            conn,
            select(*(t.c[name] for name in ROW_COLUMNS if name != "cost_micros"))
            .where(t.c.day.between(first, last))
            .order_by(t.c.day, t.c.provider, t.c.gpu_type, t.c.model_name),
        )
    missing = tuple(d.day for d in wanted if d.day not in materialized)
    days = tuple(d for d in wanted if d.day in materialized)
    if not days:
        return None, missing
    if raw.empty:
        rows = pd.DataFrame(columns=ROW_COLUMNS, dtype=object)
    else:
        raw = raw[raw["day"].isin(materialized)]
        rows = raw.assign(cost_micros=[dollars_to_micros(v) for v in raw["cost_usd"]])[ROW_COLUMNS]
    return DailyCosts(timezone, days, rows.reset_index(drop=True)), missing


def materialized_or_computed(
    engine: Engine, first: dt.date, last: dt.date, timezone: str
) -> tuple[DailyCosts, tuple[dt.date, ...]]:
    """Materialized days where they exist, the others computed from ``gpu_usage_hourly``;
    also returns the computed days (so callers can say which numbers skipped the checks)."""
    loaded, missing = load_daily_costs(engine, first, last, timezone)
    if not missing and loaded is not None:
        return loaded, ()
    computed = [compute_daily_costs(engine, a, b, timezone) for a, b in _runs(missing)]
    result = loaded
    for part in computed:
        result = part if result is None else result.merged_with(part)
    assert result is not None
    return result, missing


def require_materialized(engine: Engine, first: dt.date, last: dt.date, timezone: str) -> DailyCosts:
    loaded, missing = load_daily_costs(engine, first, last, timezone)
    if missing or loaded is None:
        raise NotMaterializedError(
            f"daily_gpu_costs is not materialized for {_describe_days(missing)} in TIMEZONE={timezone}; "
            "materialize (or backfill) those partitions first."
        )
    return loaded


def _runs(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Contiguous (first, last) runs of sorted days, so each run is one range query."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if runs and runs[-1][1] + dt.timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _describe_days(days: Sequence[dt.date]) -> str:
    return ", ".join(a.isoformat() if a == b else f"{a}..{b}" for a, b in _runs(days))
