"""Burn-rate status and daily summary: crafted known answers, DST today, gaps, demo fleet sums."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from heliox_orchestration.alerts.messages import daily_summary_message, idle_spend_message
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.costs.daily_costs import compute_daily_costs, write_daily_costs
from heliox_orchestration.costs.summary import (
    burn_rate_status,
    cost_summary,
    load_burn_rate_status,
    load_cost_summary,
)
from heliox_orchestration.detections.idle import idle_spend_report
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.partitions import local_day_bounds, local_range_bounds
from heliox_orchestration.reports import CostDriver, DailyCostPoint
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import db_sum_by_model_cents, db_sum_cents, hourly, insert, row, utc

LA = Settings(timezone="America/Los_Angeles", burn_rate_threshold_usd=Decimal("500"))
DST_DAY = dt.date(2026, 3, 8)  # 23 hours in Los Angeles


def _dst_day_rows() -> list[dict]:
    # The first 10 hours of the day in UTC (08:00-17:00): local 00:00-10:00 PDT, 11 wall-clock hours.
    start, _ = local_day_bounds(DST_DAY, LA.timezone)
    return [
        *hourly("a", start, 10, "60", 50.0, model_name="GPT-4"),
        *hourly("b", start, 10, "30", 50.0, model_name=None),
        *hourly("c", start, 1, "50", 50.0, model_name="Whisper"),
        *hourly("d", start, 1, "50", 50.0, model_name="BERT"),
        row("x", start - dt.timedelta(hours=1), "1000"),  # the day before
    ]


def test_burn_rate_today_on_a_dst_day(any_engine: Engine) -> None:
    insert(any_engine, _dst_day_rows())
    now = utc(2026, 3, 8, 18) + dt.timedelta(minutes=30)  # 11:30 PDT
    status = burn_rate_status(any_engine, DST_DAY, LA, now=now)
    assert status.cost_usd == Decimal("1000.000000")
    assert status.is_today and status.has_data
    assert status.hours_in_day == 23
    # Elapsed, not wall-clock: 10 hours of data although 11 local hours have passed.
    assert status.hours_elapsed == Decimal(10)
    assert status.projected_cost_usd == Decimal("2300.000000")
    assert status.top_drivers == (
        CostDriver("GPT-4", Decimal("600.000000")),
        CostDriver("Unattributed", Decimal("300.000000")),
        CostDriver("BERT", Decimal("50.000000")),  # ties are ordered by name
    )
    assert status.is_over and status.over_by_usd == Decimal("500")


def test_burn_rate_of_a_past_day_has_no_projection(any_engine: Engine) -> None:
    insert(any_engine, _dst_day_rows())
    status = burn_rate_status(any_engine, DST_DAY, LA, now=utc(2026, 3, 10))
    assert not status.is_today
    assert status.hours_elapsed is None and status.projected_cost_usd is None
    assert status.cost_usd == Decimal("1000.000000")


def test_burn_rate_without_data(any_engine: Engine) -> None:
    status = burn_rate_status(any_engine, DST_DAY, LA, now=utc(2026, 3, 8, 12))
    assert (status.cost_usd, status.has_data, status.top_drivers) == (Decimal(0), False, ())
    assert status.hours_elapsed == Decimal(0) and status.projected_cost_usd is None
    assert not status.is_over


def test_load_burn_rate_status_reads_the_materialized_day(any_engine: Engine) -> None:
    insert(any_engine, _dst_day_rows())
    now = utc(2026, 3, 8, 18)
    with pytest.raises(NotMaterializedError, match="2026-03-08"):
        load_burn_rate_status(any_engine, DST_DAY, LA, now=now)
    write_daily_costs(any_engine, compute_daily_costs(any_engine, DST_DAY, DST_DAY, LA.timezone), now)
    assert load_burn_rate_status(any_engine, DST_DAY, LA, now=now) == burn_rate_status(
        any_engine, DST_DAY, LA, now=now
    )


REPORT = dt.date(2026, 1, 20)
UTC_SETTINGS = Settings()
AS_OF = utc(2026, 1, 21, 9)


def _summary_fleet() -> list[dict]:
    """Day i of the 30 (0 = 2025-12-22) costs $(i + 1); days 0 and 25 have no data at all."""
    rows = []
    for i in range(30):
        if i in (0, 25):
            continue
        day = REPORT - dt.timedelta(days=29 - i)
        rows.append(row(f"r{i}", local_day_bounds(day, "UTC")[0] + dt.timedelta(hours=3), str(i + 1)))
    start, end = local_range_bounds(REPORT - dt.timedelta(days=29), REPORT, "UTC")
    rows += [row("outside", start - dt.timedelta(hours=1), "1000"), row("outside", end, "1000")]
    # The report date's models: GPT-4 $30 (above), SDXL $20, unattributed $25, BERT $5.
    noon = utc(2026, 1, 20, 12)
    rows += [
        row("sdxl", noon, "20", model_name="Stable Diffusion XL"),
        row("anon", noon, "25", model_name=None),
        row("bert", noon, "5", model_name="BERT"),
    ]
    # A free GPU idle for 2 days as of AS_OF: a low-severity finding saving nothing.
    rows += hourly("idle-l4", utc(2026, 1, 21, 9) - dt.timedelta(hours=50), 50, "0", 0.0)
    return rows


def test_cost_summary_known_answers(any_engine: Engine) -> None:
    insert(any_engine, _summary_fleet())
    summary = cost_summary(any_engine, REPORT, UTC_SETTINGS, as_of=AS_OF)
    assert summary.report_date == REPORT
    assert summary.yesterday_cost_usd == Decimal(30 + 20 + 25 + 5)
    assert summary.last_7_days_cost_usd == Decimal(24 + 25 + 27 + 28 + 29 + 30 + 50)
    assert summary.last_30_days_cost_usd == Decimal(sum(range(1, 31)) - 1 - 26 + 50)
    assert summary.top_models == (
        CostDriver("GPT-4", Decimal("30.000000")),
        CostDriver("Unattributed", Decimal("25.000000")),
        CostDriver("Stable Diffusion XL", Decimal("20.000000")),
    )
    assert summary.high_severity_count == 0
    assert summary.potential_savings_monthly_usd == Decimal(0)
    assert summary.gap_days == (dt.date(2025, 12, 22), dt.date(2026, 1, 16))
    assert summary.daily_series[0] == DailyCostPoint(dt.date(2026, 1, 14), Decimal("24.000000"))
    assert summary.daily_series[2] == DailyCostPoint(dt.date(2026, 1, 16), Decimal(0), has_data=False)
    assert [p.day for p in summary.daily_series] == [REPORT - dt.timedelta(days=6 - i) for i in range(7)]


def test_cost_summary_savings_are_the_high_severity_ones_the_idle_alert_sends(any_engine: Engine) -> None:
    """One figure: the summary's potential savings are those of the high-severity findings it
    counts, the same total the idle alert shows for them (a lower-severity finding is in neither)."""
    window_end = utc(2026, 1, 21, 9)
    insert(any_engine, hourly("idle-h100", window_end - dt.timedelta(days=14), 336, "12.29", 0.0))
    insert(
        any_engine, hourly("idle-l4", window_end - dt.timedelta(hours=50), 50, "0.8048", 0.0, gpu_type="L4")
    )
    summary = cost_summary(any_engine, REPORT, UTC_SETTINGS, as_of=AS_OF)
    assert summary.high_severity_count == 1
    assert summary.potential_savings_monthly_usd == Decimal("8971.700000")
    every = idle_spend_report(any_engine, UTC_SETTINGS, as_of=AS_OF, severities=("high", "medium", "low"))
    assert len(every.findings) == 2  # the L4 is a finding, of lower severity

    idle = idle_spend_report(any_engine, UTC_SETTINGS, as_of=AS_OF)
    assert idle.total_monthly_savings_usd == summary.potential_savings_monthly_usd
    summary_text = daily_summary_message(summary).to_plain_text()
    idle_text = idle_spend_message(idle).to_plain_text()
    assert "Potential Savings:" in summary_text and "$8,971.70/mo" in summary_text
    assert "1 high-severity recommendation available" in summary_text
    assert "Total Potential Savings: $8,971.70/month" in idle_text and "Number of Issues: 1" in idle_text


def test_load_cost_summary_needs_a_materialization(sqlite_engine: Engine) -> None:
    with pytest.raises(NotMaterializedError, match="report date 2026-01-20"):
        load_cost_summary(sqlite_engine, REPORT)


def test_cost_summary_of_an_empty_database(any_engine: Engine) -> None:
    summary = cost_summary(any_engine, REPORT, UTC_SETTINGS, as_of=AS_OF)
    assert summary.yesterday_cost_usd == summary.last_30_days_cost_usd == Decimal(0)
    assert summary.top_models == () and summary.high_severity_count == 0
    assert len(summary.gap_days) == 30
    assert not any(p.has_data for p in summary.daily_series)


def test_demo_fleet_summary_matches_database_sums(any_engine: Engine) -> None:
    settings = replace(LA, burn_rate_threshold_usd=Decimal("10000"))
    spec = FleetSpec(gpus=20, days=35, end_date=REPORT, seed=21, timezone=settings.timezone)
    seed_demo(any_engine, spec, now=utc(2026, 1, 21, 12))
    summary = cost_summary(any_engine, REPORT, settings, as_of=utc(2026, 1, 21, 12))

    def cents(value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"))

    tz = settings.timezone
    assert cents(summary.yesterday_cost_usd) == db_sum_cents(any_engine, *local_day_bounds(REPORT, tz))
    week = local_range_bounds(REPORT - dt.timedelta(days=6), REPORT, tz)
    month = local_range_bounds(REPORT - dt.timedelta(days=29), REPORT, tz)
    assert cents(summary.last_7_days_cost_usd) == db_sum_cents(any_engine, *week)
    assert cents(summary.last_30_days_cost_usd) == db_sum_cents(any_engine, *month)
    by_model = db_sum_by_model_cents(any_engine, *local_day_bounds(REPORT, tz))
    expected = sorted(by_model.items(), key=lambda kv: -kv[1])[:3]
    assert [(d.label, cents(d.cost_usd)) for d in summary.top_models] == [
        (model or "Unattributed", total) for model, total in expected
    ]
    # The demo plants two GPUs idle for a week or more.
    assert summary.high_severity_count == 2
    assert summary.gap_days == ()
    status = burn_rate_status(any_engine, REPORT, settings, now=utc(2026, 1, 21, 12))
    assert status.cost_usd == summary.yesterday_cost_usd
