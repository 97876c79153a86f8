"""Schema round-trip and the demo generator's realism knobs, on real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from heliox_orchestration.db.schema import gpu_usage_hourly, money_sum_micros
from heliox_orchestration.detections.idle import compute_idle_evaluation
from heliox_orchestration.ingest.demo_fleet import FleetSpec, generate_chunks, seed_demo
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.settings import Settings

NOW = dt.datetime(2026, 1, 21, 12, 30, tzinfo=dt.UTC)
SPEC = FleetSpec(gpus=30, days=20, end_date=dt.date(2026, 1, 20), seed=7)


def test_round_trip_row_count_and_exact_total(any_engine: Engine) -> None:
    report = seed_demo(any_engine, SPEC, now=NOW)
    with any_engine.connect() as conn:
        count, micros = conn.execute(
            select(func.count(), money_sum_micros(gpu_usage_hourly.c.cost_usd))
        ).one()
        first = conn.execute(select(gpu_usage_hourly).order_by(gpu_usage_hourly.c.usage_hour).limit(1)).one()
    assert count == report.rows > 0
    assert micros_to_dollars(micros) == report.total_cost_usd
    assert first.usage_hour == report.start
    assert first.usage_hour.tzinfo is not None and first.usage_hour.utcoffset() == dt.timedelta(0)
    assert isinstance(first.cost_usd, Decimal)
    assert first.gpu_count >= 1


def test_reseeding_replaces_instead_of_duplicating(any_engine: Engine) -> None:
    first = seed_demo(any_engine, SPEC, now=NOW)
    second = seed_demo(any_engine, SPEC, now=NOW)
    assert second.replaced_rows == first.rows
    with any_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(gpu_usage_hourly)).scalar_one() == first.rows


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = pd.concat(generate_chunks(SPEC, NOW))
    b = pd.concat(generate_chunks(SPEC, NOW))
    c = pd.concat(generate_chunks(FleetSpec(gpus=30, days=20, end_date=SPEC.end_date, seed=8), NOW))
    pd.testing.assert_frame_equal(a, b)
    assert not a["cost_micros"].equals(c["cost_micros"]) or not a["gpu_utilization_pct"].equals(
        c["gpu_utilization_pct"]
    )


def _idle_streak_days(rows: pd.DataFrame) -> pd.Series:
    """Trailing run of idle (<5%) hours per resource, in whole days."""

    def streak(group: pd.DataFrame) -> int:
        idle = (group.sort_values("usage_hour")["gpu_utilization_pct"] < 5).to_numpy()[::-1]
        n = 0
        for flag in idle:
            if not flag:
                break
            n += 1
        return n // 24

    return rows.groupby("resource_id").apply(streak)


def test_realism_knobs_in_a_30_day_demo() -> None:
    spec = FleetSpec(days=30, end_date=dt.date(2026, 1, 20))
    rows = pd.concat(generate_chunks(spec, NOW))
    streaks = _idle_streak_days(rows)
    assert (streaks >= 14).sum() >= 1, "a GPU idle for 14 days"
    assert ((streaks >= 7) & (streaks < 14)).sum() >= 1, "a GPU idle for 7 days"
    daily = rows.groupby(rows["usage_hour"].dt.date)["cost_micros"].sum() / 1_000_000
    assert (daily > 10_000).sum() >= 1, "a day over the default $10,000 burn threshold"
    assert (daily <= 10_000).sum() >= 1, "and days under it"
    assert rows["model_name"].isna().any(), "some unattributed usage"
    assert rows["gpu_utilization_pct"].between(0, 100).all()
    assert {"aws", "gcp", "azure"} <= set(rows["provider"])


@pytest.mark.parametrize("timezone", ["America/Los_Angeles", "Europe/London"])
def test_hours_cover_local_days_across_dst(timezone: str) -> None:
    # 2026-03-08 is 23 hours long in Los Angeles; 2026-03-29 in London.
    spec = FleetSpec(gpus=2, days=3, end_date=dt.date(2026, 3, 30), timezone=timezone)
    start, end = spec.hour_range(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert start.utcoffset() == dt.timedelta(0)
    hours = (end - start) / dt.timedelta(hours=1)
    assert hours == 72 - (1 if timezone == "Europe/London" else 0)


def test_today_stops_at_the_last_completed_hour() -> None:
    spec = FleetSpec(gpus=1, days=1, end_date=dt.date(2026, 1, 21))
    _start, end = spec.hour_range(NOW)
    assert end == dt.datetime(2026, 1, 21, 12, tzinfo=dt.UTC)


def test_committed_capacity_and_an_oversized_node(any_engine: Engine) -> None:
    seed_demo(any_engine, FleetSpec(gpus=20, days=20, end_date=dt.date(2026, 1, 20), seed=3), now=NOW)
    evaluation = compute_idle_evaluation(any_engine, Settings(), NOW)
    committed = [f for f in evaluation.to_findings() if f.action == "reallocate"]
    assert [(f.resource_id, f.severity, f.monthly_savings_usd) for f in committed] == [
        ("demo-aws-h100-00004", "medium", Decimal(0))
    ]
    (node,) = evaluation.to_rightsizing()
    assert (node.resource_id, node.gpu_count, node.recommended_gpu_count) == ("demo-aws-a100-00005", 8, 2)
    assert node.monthly_savings_usd > 0
    with any_engine.connect() as conn:
        categories = dict(
            conn.execute(
                select(gpu_usage_hourly.c.pricing_category, func.count()).group_by(
                    gpu_usage_hourly.c.pricing_category
                )
            ).all()
        )
    assert set(categories) == {"Committed", "Dynamic", "Standard"}
