"""The anomaly rule's spend series read from the daily rollup (``daily_resource_spend``) equals
the raw-row series: whole past days from the rollup, today so far from the raw hours, and any
day rolled up under other settings, before it ended or before the spend rollup existed read raw."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, update

from heliox_orchestration.costs.anomaly_store import evaluate_spend_anomalies
from heliox_orchestration.costs.daily_costs import compute_daily_costs, write_daily_costs
from heliox_orchestration.costs.spend_series import (
    SpendSeries,
    check_ranges,
    load_spend_series,
    usable_spend_days,
    windows_of,
)
from heliox_orchestration.db.rollup_schema import daily_resource_usage_days
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import hourly, insert

TZ = "America/New_York"
SETTINGS = Settings(timezone=TZ)
DAY = dt.date(2026, 11, 6)  # New York fell back on 2026-11-01 (a 25-hour day in the history)


def local(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), ZoneInfo(TZ)).astimezone(dt.UTC)


def roll_up(engine: Engine, first: dt.date, last: dt.date, timezone: str, at: dt.datetime) -> None:
    costs = compute_daily_costs(engine, first, last, timezone)
    write_daily_costs(engine, costs, at, SETTINGS.idle_utilization_pct)


def as_tuple(s: SpendSeries) -> tuple[object, ...]:
    return (s.windows, s.partial_until, s.series, s.resources, s.days_with_data)


def assert_same(engine: Engine, day: dt.date, partial_until: dt.datetime | None = None) -> SpendSeries:
    rolled = load_spend_series(engine, day, TZ, partial_until)
    raw = load_spend_series(engine, day, TZ, partial_until, use_rollup=False)
    assert as_tuple(rolled) == as_tuple(raw)
    assert rolled.series, "the crafted fleet spends"
    return rolled


def crafted(engine: Engine) -> None:
    """Resources that change team and model within a day, blank and missing attributes, a gap."""
    first = DAY - dt.timedelta(days=30)
    start, end = local(first), local(DAY, 15)
    hours = int((end - start) / dt.timedelta(hours=1))
    insert(engine, hourly("steady", start, hours, "12.5", 50.0, team="prod", model_name="GPT-4"))
    insert(engine, hourly("mover", start, 10, "3.333333", 10.0, team="research", model_name="  "))
    insert(engine, hourly("mover", start + dt.timedelta(hours=10), hours - 10, "3.333333", 80.0, team="prod"))
    anon = hourly("anon", start + dt.timedelta(hours=5), 200, "0.07", None, team=None, model_name=None)
    insert(engine, anon)
    insert(engine, hourly("spiky", local(DAY, 6), 9, "400", 95.0, team="research", model_name="llama"))


def test_rollup_series_equals_the_raw_series(any_engine: Engine) -> None:
    crafted(any_engine)
    after = local(DAY + dt.timedelta(days=1), 2)
    roll_up(any_engine, DAY - dt.timedelta(days=30), DAY, TZ, after)
    windows = windows_of(DAY, TZ, None)
    with any_engine.connect() as conn:
        assert usable_spend_days(conn, windows, TZ) == sorted(windows)  # all 29 days from the rollup
    assert_same(any_engine, DAY)
    # Today so far: every window is cut at 15:00, so nothing comes from the rollup.
    partial = local(DAY, 15)
    with any_engine.connect() as conn:
        assert usable_spend_days(conn, windows_of(DAY, TZ, partial), TZ) == []
    assert_same(any_engine, DAY, partial)
    raw = evaluate_spend_anomalies(any_engine, DAY, SETTINGS, after)
    assert raw.anomalies, "the spiky resource is an anomaly"


def test_stale_rollups_are_read_raw(any_engine: Engine) -> None:
    crafted(any_engine)
    first, last = DAY - dt.timedelta(days=30), DAY - dt.timedelta(days=1)
    windows = windows_of(DAY, TZ, None)
    # Rolled up in another TIMEZONE: other day bounds, never read.
    roll_up(any_engine, first, last, "UTC", local(DAY, 12))
    with any_engine.connect() as conn:
        assert usable_spend_days(conn, windows, TZ) == []
    assert_same(any_engine, DAY)
    # In TIMEZONE, but today refreshed before it ended: the past days only.
    roll_up(any_engine, first, DAY, TZ, local(DAY, 16))
    with any_engine.connect() as conn:
        assert usable_spend_days(conn, windows, TZ) == sorted(windows)[:-1]
        # A day rolled up before daily_resource_spend existed (spend_rows NULL) is read raw.
        d = daily_resource_usage_days.c
        oldest = sorted(windows)[0]
        conn.execute(update(daily_resource_usage_days).where(d.day == oldest).values(spend_rows=None))
        conn.commit()
        assert usable_spend_days(conn, windows, TZ) == sorted(windows)[1:-1]
    assert_same(any_engine, DAY)
    # The anomaly asset's input check scans only the hours read raw.
    ranges, rolled = check_ranges(any_engine, oldest, DAY, TZ)
    assert rolled == sorted(windows)[1:-1]
    assert ranges == [local_day_bounds(oldest, TZ), local_day_bounds(DAY, TZ)]


def test_demo_fleet_across_a_dst_change(any_engine: Engine) -> None:
    now = local(DAY, 14)
    seed_demo(any_engine, FleetSpec(gpus=30, days=34, end_date=DAY, timezone=TZ), now=now)
    first, yesterday = DAY - dt.timedelta(days=33), DAY - dt.timedelta(days=1)
    before = evaluate_spend_anomalies(any_engine, yesterday, SETTINGS, now)  # raw rows only
    roll_up(any_engine, first, yesterday, TZ, now)
    assert_same(any_engine, yesterday)
    assert_same(any_engine, DAY, local(DAY, 14))
    # The evaluation reads the rollup now; the answer is the raw rule's.
    assert load_spend_series(any_engine, yesterday, TZ).days_with_data
    assert evaluate_spend_anomalies(any_engine, yesterday, SETTINGS, now) == before
