"""Daily cost aggregates: crafted rows with known answers, DST days, exact money, storage."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from heliox_orchestration.costs.daily_costs import (
    compute_daily_costs,
    load_daily_costs,
    local_days,
    materialized_or_computed,
    write_daily_costs,
)
from heliox_orchestration.db.schema import daily_gpu_cost_days
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration_tests.crafted import db_sum_cents, hourly, insert, row, table_count, utc

LA = "America/Los_Angeles"
DAY = dt.date(2026, 1, 15)
COMPUTED_AT = utc(2026, 1, 21, 12)


def _by_key(costs_rows: list[dict]) -> dict[tuple, dict]:
    return {(r["day"], r["provider"], r["gpu_type"], r["model_name"]): r for r in costs_rows}


def test_one_day_known_answers(any_engine: Engine) -> None:
    start, end = local_day_bounds(DAY, "UTC")
    insert(
        any_engine,
        [
            *hourly("h100-a", start, 24, "12.29", 80.0, model_name="GPT-4"),
            *hourly("h100-b", start, 10, "12.29", 20.0, model_name="GPT-4", gpu_count=2),
            *hourly("a100-x", start, 5, "4.10", None, provider="gcp", gpu_type="A100", model_name=None),
            *hourly("a100-y", start, 3, "4.10", 10.0, provider="gcp", gpu_type="A100", model_name="  "),
            # Outside the day: the hour before it and the hour at its end.
            row("h100-a", start - dt.timedelta(hours=1), "999"),
            row("h100-a", end, "999"),
        ],
    )
    costs = compute_daily_costs(any_engine, DAY, DAY, "UTC")
    rows = _by_key(costs.rows.to_dict("records"))
    assert set(rows) == {(DAY, "aws", "H100", "GPT-4"), (DAY, "gcp", "A100", None)}

    h100 = rows[(DAY, "aws", "H100", "GPT-4")]
    assert h100["cost_usd"] == Decimal("12.29") * 34
    assert h100["gpu_hours"] == 24 + 10 * 2
    # GPU-hour weighted: (24 x 80 + 20 x 20) / 44
    assert h100["avg_utilization_pct"] == round((24 * 80 + 20 * 20) / 44, 2)
    assert h100["usage_rows"] == 34
    assert h100["last_usage_hour"] == end - dt.timedelta(hours=1)

    # NULL and blank model names are one unattributed group; unknown utilization is left out.
    a100 = rows[(DAY, "gcp", "A100", None)]
    assert a100["cost_usd"] == Decimal("4.10") * 8
    assert a100["avg_utilization_pct"] == 10.0

    (totals,) = costs.day_totals().to_dict("records")
    assert totals["has_data"] and totals["hours_in_day"] == 24
    assert totals["cost_usd"] == Decimal("12.29") * 34 + Decimal("4.10") * 8
    assert totals["cost_usd"] == db_sum_cents(any_engine, start, end)


def test_money_is_exact_where_floats_drift(any_engine: Engine) -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; a thousand micro-dollar rows must add up exactly.
    start, _ = local_day_bounds(DAY, "UTC")
    rows = [row(f"r{i}", start + dt.timedelta(hours=i % 24), "0.1" if i % 2 else "0.2") for i in range(1000)]
    rows += [row(f"m{i}", start, "0.000001") for i in range(999)]
    insert(any_engine, rows)
    costs = compute_daily_costs(any_engine, DAY, DAY, "UTC")
    assert costs.day_totals()["cost_usd"][0] == Decimal("150.000999")


@pytest.mark.parametrize(
    ("day", "hours"),
    [(dt.date(2026, 3, 8), 23), (dt.date(2026, 11, 1), 25), (dt.date(2026, 3, 9), 24)],
)
def test_dst_days_cover_exactly_their_hours(any_engine: Engine, day: dt.date, hours: int) -> None:
    # One $1 row every UTC hour from two days before to two days after: a day's total is its length.
    first, last = day - dt.timedelta(days=2), day + dt.timedelta(days=2)
    start, _ = local_day_bounds(first, LA)
    _, end = local_day_bounds(last, LA)
    insert(any_engine, hourly("gpu", start, int((end - start) / dt.timedelta(hours=1)), "1", 50.0))

    costs = compute_daily_costs(any_engine, day, day, LA)
    (totals,) = costs.day_totals().to_dict("records")
    assert totals["hours_in_day"] == hours
    assert totals["cost_usd"] == Decimal(hours)
    assert totals["usage_rows"] == hours
    day_start, day_end = local_day_bounds(day, LA)
    assert totals["start_utc"] == day_start and totals["end_utc"] == day_end
    assert db_sum_cents(any_engine, day_start, day_end) == Decimal(hours)

    # The same day inside a multi-day range (one query) gets the same hours; neighbours keep theirs.
    multi = compute_daily_costs(any_engine, first, last, LA).day_totals()
    by_day = dict(zip(multi["day"], multi["cost_usd"], strict=True))
    assert by_day[day] == Decimal(hours)
    assert sum(by_day.values()) == Decimal(int((end - start) / dt.timedelta(hours=1)))


def test_dst_boundary_rows_land_on_the_right_side(any_engine: Engine) -> None:
    # 2026-03-08 LA: local midnight is 08:00 UTC (PST), the next midnight 07:00 UTC (PDT).
    insert(
        any_engine,
        [
            row("gpu", utc(2026, 3, 8, 7), "1"),  # 23:00 on the 7th
            row("gpu", utc(2026, 3, 8, 8), "10"),  # 00:00 on the 8th
            row("gpu", utc(2026, 3, 9, 6), "100"),  # 23:00 on the 8th (PDT)
            row("gpu", utc(2026, 3, 9, 7), "1000"),  # 00:00 on the 9th
            # 2026-11-01 LA: starts 07:00 UTC (PDT), ends 08:00 UTC on the 2nd (PST).
            row("gpu", utc(2026, 11, 1, 6), "1"),
            row("gpu", utc(2026, 11, 1, 7), "10"),
            row("gpu", utc(2026, 11, 2, 7), "100"),
            row("gpu", utc(2026, 11, 2, 8), "1000"),
        ],
    )
    march = compute_daily_costs(any_engine, dt.date(2026, 3, 7), dt.date(2026, 3, 9), LA).day_totals()
    assert list(march["cost_usd"]) == [Decimal(1), Decimal(110), Decimal(1000)]
    november = compute_daily_costs(any_engine, dt.date(2026, 10, 31), dt.date(2026, 11, 2), LA).day_totals()
    assert list(november["cost_usd"]) == [Decimal(1), Decimal(110), Decimal(1000)]
    assert list(november["hours_in_day"]) == [24, 25, 24]


def test_range_query_equals_day_by_day_and_database_sums(any_engine: Engine) -> None:
    spec = FleetSpec(gpus=12, days=10, end_date=dt.date(2026, 3, 10), seed=5, timezone=LA)
    seed_demo(any_engine, spec, now=utc(2026, 3, 12))
    first, last = dt.date(2026, 3, 1), dt.date(2026, 3, 10)
    ranged = compute_daily_costs(any_engine, first, last, LA)
    for d in local_days(first, last, LA):
        single = compute_daily_costs(any_engine, d.day, d.day, LA)
        assert ranged.for_days(d.day, d.day).rows.equals(single.rows)
        total = single.day_totals()["cost_usd"][0]
        assert total.quantize(Decimal("0.01")) == db_sum_cents(any_engine, d.start, d.end)


def test_empty_database_gives_gap_days_not_a_crash(any_engine: Engine) -> None:
    costs = compute_daily_costs(any_engine, DAY, DAY + dt.timedelta(days=1), "UTC")
    assert costs.rows.empty
    totals = costs.day_totals()
    assert list(totals["has_data"]) == [False, False]
    assert list(totals["cost_usd"]) == [Decimal(0), Decimal(0)]
    assert write_daily_costs(any_engine, costs, COMPUTED_AT) == 0
    assert table_count(any_engine, "daily_gpu_cost_days") == 2


def test_write_replaces_the_days_and_load_round_trips(any_engine: Engine) -> None:
    start, _ = local_day_bounds(DAY, "UTC")
    insert(
        any_engine, hourly("a", start, 48, "2.5", 50.0) + hourly("b", start, 48, "1", 50.0, model_name=None)
    )
    costs = compute_daily_costs(any_engine, DAY, DAY + dt.timedelta(days=1), "UTC")
    write_daily_costs(any_engine, costs, COMPUTED_AT)
    write_daily_costs(any_engine, costs, COMPUTED_AT)  # a re-run replaces, never duplicates
    assert table_count(any_engine, "daily_gpu_costs") == 4
    assert table_count(any_engine, "daily_gpu_cost_days") == 2

    loaded, missing = load_daily_costs(
        any_engine, DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1), "UTC"
    )
    assert missing == (DAY - dt.timedelta(days=1),)
    assert loaded is not None
    assert loaded.rows.to_dict("records") == costs.rows.to_dict("records")

    # New usage for the first day only: re-materializing that day changes it, not the other.
    insert(any_engine, [row("c", start, "100")])
    write_daily_costs(any_engine, compute_daily_costs(any_engine, DAY, DAY, "UTC"), COMPUTED_AT)
    with any_engine.connect() as conn:
        stored = dict(conn.execute(select(daily_gpu_cost_days.c.day, daily_gpu_cost_days.c.cost_usd)).all())
    assert stored == {DAY: Decimal("184.000000"), DAY + dt.timedelta(days=1): Decimal("84.000000")}


def test_days_of_another_timezone_count_as_missing(any_engine: Engine) -> None:
    start, _ = local_day_bounds(DAY, "UTC")
    insert(any_engine, hourly("a", start, 24, "1", 50.0))
    write_daily_costs(any_engine, compute_daily_costs(any_engine, DAY, DAY, "UTC"), COMPUTED_AT)
    loaded, missing = load_daily_costs(any_engine, DAY, DAY, LA)
    assert loaded is None and missing == (DAY,)
    merged, computed = materialized_or_computed(any_engine, DAY, DAY, LA)
    assert computed == (DAY,)
    assert merged.day_totals()["cost_usd"][0] == Decimal(16)  # LA day starts at 08:00 UTC
