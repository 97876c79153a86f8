"""The idle rule read from the daily rollup gives exactly the raw-row rule's findings; rightsizing
and committed capacity; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from heliox_orchestration.alerts.messages import idle_spend_message, rightsizing_message
from heliox_orchestration.costs.common import records_of
from heliox_orchestration.costs.daily_costs import compute_daily_costs, write_daily_costs
from heliox_orchestration.costs.rollup import forget_rollup_days
from heliox_orchestration.db.rollup_schema import (
    daily_resource_spend,
    daily_resource_usage,
    daily_resource_usage_days,
)
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.detections.idle import RAW, IdleEvaluation, compute_idle_evaluation, idle_window
from heliox_orchestration.detections.idle_rollup import window_segments
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.reports import IdleFinding, IdleSpendReport, RightsizingFinding
from heliox_orchestration.settings import Settings, SettingsError, load_settings
from heliox_orchestration_tests.crafted import hourly, insert, row, utc

H = dt.timedelta(hours=1)
AS_OF = utc(2026, 1, 21, 12) + dt.timedelta(minutes=30)


def refresh_window(engine: Engine, settings: Settings, as_of: dt.datetime) -> None:
    """The daily_gpu_costs refresh of every local day of the window, after the window ended."""
    window = idle_window(settings, as_of)
    tz = settings.tz
    first, last = window.start.astimezone(tz).date(), (window.end - H).astimezone(tz).date()
    costs = compute_daily_costs(engine, first, last, settings.timezone)
    write_daily_costs(engine, costs, as_of, settings.idle_utilization_pct)


def both(engine: Engine, settings: Settings, as_of: dt.datetime) -> tuple[IdleEvaluation, IdleEvaluation]:
    return (
        compute_idle_evaluation(engine, settings, as_of, source=RAW),
        compute_idle_evaluation(engine, settings, as_of),
    )


def assert_identical(raw: IdleEvaluation, rolled: IdleEvaluation) -> list[dict[str, Any]]:
    findings = records_of(rolled.findings)
    assert findings == records_of(raw.findings)
    assert rolled.withheld == raw.withheld
    assert rolled.has_usage == raw.has_usage
    return findings


def mixed_fleet(start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Idle streaks that start before, at and inside local days, gaps, unknown hours, spot prices,
    committed capacity and multi-GPU nodes, around a window [start, end)."""
    rows = [
        *hourly("idle-h100", start - 100 * H, 100, "12.29", 90.0),
        *hourly("idle-h100", start, 336, "12.29", 0.5),
        *hourly("new-l4", end - 50 * H, 50, "0.8048", 1.0, gpu_type="L4", model_name=None),
        *hourly("t4", end - 98 * H, 98, "0.526", 2.0, provider="azure", gpu_type="T4"),
        *hourly("busy", start, 336, "4.10", 70.0, provider="gcp", gpu_type="A100"),
        # Busy for 3 hours 5 days and 7 hours in, then idle: the streak starts inside a local day.
        *hourly("mid-day", start, 127, "2.50", 1.0),
        *hourly("mid-day", start + 127 * H, 3, "3.00", 60.0),
        *hourly("mid-day", start + 130 * H, 206, "2.50", 1.0),
        # Active only in the window's first (partial) day, then idle with gaps every third hour.
        *hourly("head-active", start, 3, "1.10", 80.0),
        *(row("head-active", start + i * H, "1.10", 0.0) for i in range(3, 336) if i % 3),
        # Unknown utilization (never idle) in the middle, then idle.
        *hourly("unknown", start, 100, "2", 0.0),
        *hourly("unknown", start + 100 * H, 5, "2", None),
        *hourly("unknown", start + 105 * H, 231, "2", 0.0),
        # Spot: the price moves every hour.
        *(row("spot", start + i * H, f"{1 + (i % 7) * 0.137:.3f}", 0.0, provider="gcp") for i in range(336)),
        # Committed capacity sitting idle.
        *hourly("reserved", start, 336, "30.00", 0.0, gpu_count=8, pricing_category="Committed"),
        # Busy until its last hour: not idle now.
        *hourly("busy-last", end - 101 * H, 100, "1", 0.0),
        row("busy-last", end - H, "1", 80.0),
        # A 4-GPU node at 20% mean with a 45% peak, and an 8-GPU node at 4% (idle).
        *(
            row("oversized", start + i * H, "16", 45.0 if i % 24 == 15 else 19.0 + (i % 3), gpu_count=4)
            for i in range(336)
        ),
        *hourly("idle-8x", start, 336, "32", 4.0, gpu_count=8),
        # Rows only in the window's last (partial) day.
        *hourly("late", end - 6 * H, 6, "0.5", 0.0),
    ]
    return [r for r in rows if start - 100 * H <= r["usage_hour"] < end]


CASES = [
    ("UTC", AS_OF),
    ("UTC", utc(2026, 1, 21)),  # the window is exactly 14 local days
    ("America/New_York", utc(2026, 3, 12, 15) + dt.timedelta(minutes=5)),  # spring forward: 23 h
    ("Europe/Berlin", utc(2026, 11, 2, 9)),  # fall back on 2026-10-25: 25 h
    ("Asia/Kolkata", utc(2026, 1, 21, 3)),  # a half-hour offset
]


@pytest.mark.parametrize(("timezone", "as_of"), CASES)
def test_rollup_findings_identical_to_the_raw_rule(
    any_engine: Engine, timezone: str, as_of: dt.datetime
) -> None:
    settings = Settings(timezone=timezone)
    window = idle_window(settings, as_of)
    insert(any_engine, mixed_fleet(window.start, window.end))
    refresh_window(any_engine, settings, as_of)
    raw, rolled = both(any_engine, settings, as_of)
    whole, partial = window_segments(window.start, window.end, timezone)
    assert rolled.rollup_days == tuple(s.day for s in whole)  # every whole day read from the rollup
    assert set(rolled.raw_days) == {s.day for s in partial}
    findings = {f["resource_id"]: f for f in assert_identical(raw, rolled)}
    assert {"idle-h100", "mid-day", "head-active", "unknown", "spot", "reserved", "idle-8x"} <= set(findings)
    assert "busy-last" not in findings and "oversized" not in findings
    assert findings["mid-day"]["streak_hours"] == 206
    assert "late" not in findings  # 6 hours, all in the last partial day: too few to judge
    # Other thresholds, and the window of a week: the same answer as the raw rule.
    for variant in (
        replace(settings, idle_lookback_days=7),
        replace(settings, idle_min_idle_share_pct=Decimal("97.5")),
        replace(settings, idle_min_observed_hours=300),
    ):
        assert_identical(*both(any_engine, variant, as_of))


def test_demo_fleet_across_a_dst_change(any_engine: Engine) -> None:
    as_of = utc(2026, 11, 6, 17) + dt.timedelta(minutes=20)  # New York fell back on 2026-11-01
    settings = Settings(timezone="America/New_York")
    seed_demo(
        any_engine,
        FleetSpec(gpus=40, days=20, end_date=dt.date(2026, 11, 6), timezone=settings.timezone),
        now=as_of,
    )
    refresh_window(any_engine, settings, as_of)
    raw, rolled = both(any_engine, settings, as_of)
    assert len(rolled.rollup_days) == 13
    assert len(assert_identical(raw, rolled)) >= 4


def test_changed_settings_read_the_raw_rows_until_the_days_are_refreshed(any_engine: Engine) -> None:
    settings = Settings()
    window = idle_window(settings, AS_OF)
    insert(any_engine, mixed_fleet(window.start, window.end))
    refresh_window(any_engine, settings, AS_OF)
    for changed in (
        replace(settings, idle_utilization_pct=Decimal("30.5")),
        replace(settings, timezone="Asia/Tokyo"),
    ):
        raw, rolled = both(any_engine, changed, AS_OF)
        assert rolled.rollup_days == ()  # computed with other settings: not used
        assert_identical(raw, rolled)
    quiet = replace(settings, idle_utilization_pct=Decimal("30.5"))
    refresh_window(any_engine, quiet, AS_OF)
    raw, rolled = both(any_engine, quiet, AS_OF)
    assert len(rolled.rollup_days) == 13
    assert "oversized" in {f["resource_id"] for f in assert_identical(raw, rolled)}


def test_a_day_refreshed_before_it_ended_or_forgotten_is_read_raw(any_engine: Engine) -> None:
    settings = Settings()
    window = idle_window(settings, AS_OF)
    insert(any_engine, mixed_fleet(window.start, window.end))
    costs = compute_daily_costs(any_engine, dt.date(2026, 1, 8), dt.date(2026, 1, 20), "UTC")
    # Rolled up after Jan 20 ended, then refreshed again at 18:00 on Jan 20 (a clock stood back):
    # the day in progress keeps no rollup, not even the earlier one; the ended days keep theirs.
    write_daily_costs(any_engine, costs, AS_OF, settings.idle_utilization_pct)
    write_daily_costs(any_engine, costs, utc(2026, 1, 20, 18), settings.idle_utilization_pct)
    with any_engine.connect() as conn:
        stored = {
            table.name: set(conn.execute(select(table.c.day).distinct()).scalars())
            for table in (daily_resource_usage, daily_resource_usage_days, daily_resource_spend)
        }
    ended = {dt.date(2026, 1, d) for d in range(8, 20)}
    assert stored == dict.fromkeys(stored, ended)
    rolled = compute_idle_evaluation(any_engine, settings, AS_OF)
    assert dt.date(2026, 1, 20) in rolled.raw_days and len(rolled.rollup_days) == 12
    forget_rollup_days(any_engine, dt.date(2026, 1, 10), dt.date(2026, 1, 11))
    rolled = compute_idle_evaluation(any_engine, settings, AS_OF)
    assert len(rolled.rollup_days) == 10
    assert_identical(compute_idle_evaluation(any_engine, settings, AS_OF, source=RAW), rolled)


def test_rollup_rows_of_a_day(any_engine: Engine) -> None:
    settings = Settings()
    insert(
        any_engine,
        [
            *hourly("node", utc(2026, 1, 10), 7, "4", 50.0, gpu_count=4),
            row("node", utc(2026, 1, 10, 7), "4", 90.0, gpu_count=4, pricing_category="Committed"),
            *hourly("node", utc(2026, 1, 10, 9), 3, "4.5", 1.0, gpu_count=4),
            row("node", utc(2026, 1, 10, 13), "4", None, gpu_count=2),
        ],
    )
    costs = compute_daily_costs(any_engine, dt.date(2026, 1, 10), dt.date(2026, 1, 10), "UTC")
    write_daily_costs(any_engine, costs, AS_OF, settings.idle_utilization_pct)
    with any_engine.connect() as conn:
        r = conn.execute(select(daily_resource_usage)).one()._asdict()
    assert r["cost_micros"] == 49_500_000
    assert (r["gpu_hours"], r["usage_rows"], r["utilization_rows"], r["idle_rows"]) == (46, 12, 11, 3)
    assert (r["first_observed_hour"], r["last_observed_hour"]) == (utc(2026, 1, 10), utc(2026, 1, 10, 13))
    # The NULL hour is not idle: it is the last active hour, and the idle tail is empty.
    assert (r["first_active_hour"], r["last_active_hour"]) == (utc(2026, 1, 10), utc(2026, 1, 10, 13))
    assert (r["tail_idle_rows"], r["tail_idle_cost_micros"], r["tail_idle_start"]) == (0, 0, None)
    assert (r["utilization_gpu_hours"], r["max_gpu_count"]) == (44, 4)
    assert r["utilization_x_gpu_hours"] == pytest.approx(7 * 200 + 360 + 12)
    assert r["peak_gpu_load"] == pytest.approx(3.6)
    assert (r["committed_cost_micros"], r["committed_rows"]) == (4_000_000, 1)


def _daily_load(hour: int) -> float:
    """45% one hour a day, 15% five hours, 20% the rest: a mean of exactly 20%."""
    return 45.0 if hour % 24 == 15 else 15.0 if hour % 24 < 5 else 20.0


def test_rightsizing_and_idle_multi_gpu_nodes(any_engine: Engine) -> None:
    settings = Settings()
    window = idle_window(settings, AS_OF)
    insert(
        any_engine,
        [
            # 4 GPUs at 20% mean, 45% in one hour a day: peak load 1.8 GPUs -> 2.
            *(row("four", window.start + i * H, "16", _daily_load(i), gpu_count=4) for i in range(336)),
            *hourly("eight", window.start, 336, "32", 4.0, gpu_count=8),
            *hourly("busy-four", window.start, 336, "16", 60.0, gpu_count=4),
            *hourly("single", window.start, 336, "4", 10.0),
        ],
    )
    refresh_window(any_engine, settings, AS_OF)
    evaluation = compute_idle_evaluation(any_engine, settings, AS_OF)
    assert set(evaluation.findings["resource_id"]) == {"eight"}  # idle, not rightsized
    sized = records_of(evaluation.rightsizing)
    assert [r["resource_id"] for r in sized] == ["four"]
    four = sized[0]
    assert (four["gpu_count"], four["recommended_gpu_count"], four["severity"]) == (4, 2, "medium")
    assert four["hourly_cost_per_gpu_usd"] == Decimal("4.000000")
    assert four["monthly_savings_usd"] == Decimal("5840.000000")  # 2 spare GPUs x $4 x 730
    assert four["action"] == "rightsize"
    assert (four["mean_utilization_pct"], four["peak_gpu_load"]) == (20.0, 1.8)
    higher = replace(settings, rightsize_utilization_pct=Decimal("15"))
    assert records_of(compute_idle_evaluation(any_engine, higher, AS_OF).rightsizing) == []


def test_committed_idle_gpu_says_reallocate_with_no_termination_savings(any_engine: Engine) -> None:
    settings = Settings()
    window = idle_window(settings, AS_OF)
    insert(
        any_engine,
        hourly("reserved", window.start, 336, "12.29", 0.0, pricing_category="Committed")
        + hourly("on-demand", window.start, 336, "12.29", 0.0, pricing_category="Standard")
        + hourly("spot", window.start, 336, "4.00", 0.0, pricing_category="Dynamic"),
    )
    for source in ("rollup", RAW):
        findings = {
            f.resource_id: f
            for f in compute_idle_evaluation(any_engine, settings, AS_OF, source=source).to_findings()
        }
        reserved = findings["reserved"]
        assert reserved.action == "reallocate" and reserved.monthly_savings_usd == Decimal(0)
        assert "reallocate" in reserved.detail and reserved.hourly_cost_usd == Decimal("12.290000")
        assert (findings["on-demand"].action, findings["on-demand"].monthly_savings_usd) == (
            "terminate",
            Decimal("8971.700000"),
        )
        assert findings["spot"].monthly_savings_usd == Decimal("2920.000000")


def test_rightsizing_settings_and_messages() -> None:
    assert load_settings({}).rightsize_alerts is False
    env = {"RIGHTSIZE_ALERTS": "true", "RIGHTSIZE_UTILIZATION_PCT": "25"}
    settings = load_settings(env)
    assert (settings.rightsize_alerts, settings.rightsize_utilization_pct) == (True, Decimal("25"))
    with pytest.raises(SettingsError, match="RIGHTSIZE_ALERTS='yes' is not a boolean; use true or false"):
        load_settings({"RIGHTSIZE_ALERTS": "yes"})
    node = RightsizingFinding(
        "node-1",
        "aws",
        "A100",
        4,
        2,
        "llm",
        "GPT-4",
        20.0,
        1.8,
        Decimal("5840"),
        "rightsize",
        "Oversized GPU node: 4x A100 on AWS",
        "20% mean utilization on 4 GPUs, peak 1.8 GPUs' worth: 2 would do",
    )
    payload = json.dumps(rightsizing_message([node]).to_payload(), ensure_ascii=False)
    assert "2 would do" in payload and "$5,840.00/month" in payload and "RIGHTSIZE_ALERTS=true" in payload
    reserved = IdleFinding(
        "r-1",
        "aws",
        "H100",
        1,
        None,
        None,
        None,
        5,
        100,
        Decimal(0),
        "medium",
        "Idle GPU: H100 on AWS",
        "100% idle for 5 days; committed capacity: reallocate it (no savings from terminating)",
        Decimal("12.29"),
        "reallocate",
    )
    text = json.dumps(
        idle_spend_message(IdleSpendReport(AS_OF, (reserved,))).to_payload(), ensure_ascii=False
    )
    assert "Reallocate" in text and "$8,971.70/month" in text and "$0 from terminating" in text


def test_bad_rows_on_hours_read_raw_withhold_their_gpu_and_rolled_up_days_are_not_rescanned(
    any_engine: Engine,
) -> None:
    settings = Settings()
    window = idle_window(settings, AS_OF)  # 12:00 on the 7th to 12:00 on the 21st (UTC)
    fleet = mixed_fleet(window.start, window.end)
    fleet += hourly("bad-today", window.start, 336, "3", 0.0)
    fleet += hourly("edited-later", window.start, 336, "3", 0.0)
    insert(any_engine, fleet)
    refresh_window(any_engine, settings, AS_OF)  # the 8th to the 20th pass the checks, rolled up
    u = gpu_usage_hourly.c
    with any_engine.begin() as conn:
        # A bad hour of today's partial day (read raw), and one edited into a rolled-up day
        # after its refresh (outside Heliox): the day's next refresh would judge it.
        for resource, hour in (("bad-today", utc(2026, 1, 21, 3)), ("edited-later", utc(2026, 1, 15, 3))):
            rows = update(gpu_usage_hourly).where(u.resource_id == resource, u.usage_hour == hour)
            conn.execute(rows.values(cost_usd=Decimal(-1)))
    raw, rolled = both(any_engine, settings, AS_OF)
    assert [w.resource_id for w in raw.withheld] == ["bad-today", "edited-later"]
    # The raw hours (the two partial days) are scanned; the rolled-up days are not.
    assert [(w.resource_id, w.usage_rows, w.problems) for w in rolled.withheld] == [
        ("bad-today", 1, ("negative cost_usd",))
    ]
    assert rolled.usage_report is not None and raw.usage_report is not None
    assert rolled.usage_report.violations["negative cost_usd"] == 1
    assert rolled.usage_report.rows_checked == raw.usage_report.rows_checked
    findings = {f["resource_id"] for f in records_of(rolled.findings)}
    assert "bad-today" not in findings and "edited-later" in findings
    assert findings - {"edited-later"} == {f["resource_id"] for f in records_of(raw.findings)}
