"""The idle-GPU rule on crafted fleets with known answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.detections.idle import (
    compute_idle_evaluation,
    idle_detail,
    idle_spend_report,
    idle_window,
    load_idle_spend_report,
    write_idle_evaluation,
)
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import hourly, insert, row, table_count, utc

SETTINGS = Settings()
AS_OF = utc(2026, 1, 21, 12) + dt.timedelta(minutes=30)
WINDOW = idle_window(SETTINGS, AS_OF)
H = dt.timedelta(hours=1)


def _last_hours(hours: int) -> dt.datetime:
    """Start of the trailing ``hours`` of the window."""
    return WINDOW.end - hours * H


def _findings(engine: Engine, settings: Settings = SETTINGS) -> dict[str, dict]:
    frame = compute_idle_evaluation(engine, settings, AS_OF).findings
    return {r["resource_id"]: r for r in frame.to_dict("records")}


def test_window_is_the_last_336_completed_hours() -> None:
    assert WINDOW.end == utc(2026, 1, 21, 12)
    assert (WINDOW.end - WINDOW.start) / H == 336


def test_crafted_fleet_known_answers(any_engine: Engine) -> None:
    insert(
        any_engine,
        [
            # Busy three weeks ago (outside the window), then idle for the whole window.
            *hourly("idle-h100", WINDOW.start - 100 * H, 100, "12.29", 90.0),
            *hourly("idle-h100", WINDOW.start, 336, "12.29", 0.5),
            # Provisioned 50 hours ago and never used.
            *hourly("new-l4", _last_hours(50), 50, "0.8048", 1.0, gpu_type="L4", model_name=None),
            # Idle for 4 days since provisioning.
            *hourly("t4", _last_hours(98), 98, "0.526", 2.0, provider="azure", gpu_type="T4"),
            # Busy all the time.
            *hourly("busy", WINDOW.start, 336, "4.10", 70.0, provider="gcp", gpu_type="A100"),
        ],
    )
    evaluation = compute_idle_evaluation(any_engine, SETTINGS, AS_OF)
    findings = {f.resource_id: f for f in evaluation.to_findings()}
    assert set(findings) == {"idle-h100", "new-l4", "t4"}

    h100 = findings["idle-h100"]
    assert (h100.severity, h100.idle_days, h100.idle_pct) == ("high", 14, 100)
    assert h100.monthly_savings_usd == Decimal("8971.700000")  # 12.29 x 730
    assert h100.title == "Idle GPU: H100 on AWS"
    assert h100.detail == "100% idle for 14 days"
    assert (h100.provider, h100.gpu_type, h100.gpu_count, h100.region) == ("aws", "H100", 1, "us-east-1")

    l4 = findings["new-l4"]
    assert (l4.severity, l4.idle_days, l4.idle_pct) == ("low", 2, 100)
    assert l4.monthly_savings_usd == Decimal("587.504000")
    assert l4.detail == "100% idle for 2 days"
    assert l4.model_name is None

    t4 = findings["t4"]
    assert (t4.severity, t4.idle_days, t4.title) == ("medium", 4, "Idle GPU: T4 on Azure")

    # Highest savings first; the default report holds the high-severity ones only.
    assert [f.resource_id for f in evaluation.to_findings()] == ["idle-h100", "new-l4", "t4"]
    report = idle_spend_report(any_engine, SETTINGS, as_of=AS_OF)
    assert [f.resource_id for f in report.findings] == ["idle-h100"]
    assert report.as_of == AS_OF
    assert report.total_monthly_savings_usd == Decimal("8971.700000")
    low_and_medium = idle_spend_report(any_engine, SETTINGS, as_of=AS_OF, severities=("low", "medium"))
    assert [f.resource_id for f in low_and_medium.findings] == ["new-l4", "t4"]


def test_streak_starts_after_the_last_active_hour(any_engine: Engine) -> None:
    # 10 busy hours at $10, then 326 idle hours at $2: 97% idle, 13 days, savings at the idle rate.
    insert(
        any_engine,
        hourly("gpu", WINDOW.start, 10, "10", 60.0) + hourly("gpu", WINDOW.start + 10 * H, 326, "2", 0.0),
    )
    f = _findings(any_engine)["gpu"]
    assert (f["streak_hours"], f["idle_days"], f["idle_pct"], f["severity"]) == (326, 13, 97, "high")
    assert f["last_active_hour"] == WINDOW.start + 9 * H
    assert f["streak_start"] == WINDOW.start + 10 * H
    assert f["monthly_savings_usd"] == Decimal("1460.000000")
    assert f["detail"] == "97% idle for 13 days"


def test_savings_are_the_mean_cost_of_the_streak(any_engine: Engine) -> None:
    # Spot prices vary: 24 hours at $1 and 24 at $2 average to $1.50 an hour.
    insert(
        any_engine,
        hourly("spot", _last_hours(48), 24, "1", 0.0) + hourly("spot", _last_hours(24), 24, "2", 0.0),
    )
    assert _findings(any_engine)["spot"]["monthly_savings_usd"] == Decimal("1095.000000")


@pytest.mark.parametrize(("active", "is_finding"), [(2, True), (3, False)])
def test_idle_share_threshold(any_engine: Engine, active: int, is_finding: bool) -> None:
    # 40 observed hours: 38 idle is exactly 95%, 37 idle is 92.5%.
    insert(any_engine, hourly("gpu", _last_hours(40), active, "1", 50.0))
    insert(any_engine, hourly("gpu", _last_hours(40 - active), 40 - active, "1", 1.0))
    findings = _findings(any_engine)
    assert ("gpu" in findings) is is_finding
    if is_finding:
        assert findings["gpu"]["idle_pct"] == 95
        assert findings["gpu"]["detail"] == "95% idle for 1 day"


@pytest.mark.parametrize(("hours", "is_finding"), [(23, False), (24, True)])
def test_minimum_observed_hours(any_engine: Engine, hours: int, is_finding: bool) -> None:
    insert(any_engine, hourly("gpu", _last_hours(hours), hours, "1", 0.0))
    assert ("gpu" in _findings(any_engine)) is is_finding


def test_utilization_at_the_threshold_is_not_idle(any_engine: Engine) -> None:
    insert(
        any_engine,
        hourly("at", _last_hours(48), 48, "1", 5.0) + hourly("below", _last_hours(48), 48, "1", 4.99),
    )
    assert set(_findings(any_engine)) == {"below"}


def test_unknown_utilization_is_never_idle(any_engine: Engine) -> None:
    insert(
        any_engine,
        [
            # A FOCUS import: cost known, utilization unknown.
            *hourly("focus", WINDOW.start, 336, "12.29", None),
            # Idle, but its last hour is unknown: not idle *now*, so no finding.
            *hourly("unknown-last", _last_hours(101), 100, "1", 0.0),
            row("unknown-last", _last_hours(1), "1", None),
            # A busy last hour after 99% idle: the streak is empty, no finding either.
            *hourly("busy-last", _last_hours(101), 100, "1", 0.0),
            row("busy-last", _last_hours(1), "1", 80.0),
        ],
    )
    assert _findings(any_engine) == {}


def test_short_streak_detail_in_hours(any_engine: Engine) -> None:
    # 90 idle hours, one busy hour, 9 idle hours: 99% idle, idle for 9 hours right now.
    insert(
        any_engine,
        [
            *hourly("gpu", _last_hours(100), 90, "1", 0.0),
            row("gpu", _last_hours(10), "1", 40.0),
            *hourly("gpu", _last_hours(9), 9, "1", 0.0),
        ],
    )
    f = _findings(any_engine)["gpu"]
    assert (f["idle_days"], f["severity"], f["detail"]) == (0, "low", "99% idle for 9 hours")


def test_attributes_come_from_the_last_observed_hour(any_engine: Engine) -> None:
    insert(
        any_engine,
        hourly("gpu", _last_hours(48), 24, "8", 0.0, model_name="old", gpu_count=8)
        + hourly("gpu", _last_hours(24), 24, "8", 0.0, model_name="new", gpu_count=8, team="infra"),
    )
    f = _findings(any_engine)["gpu"]
    assert (f["model_name"], f["team"], f["gpu_count"]) == ("new", "infra", 8)


def test_thresholds_come_from_settings(any_engine: Engine) -> None:
    insert(
        any_engine,
        hourly("idle", WINDOW.start, 336, "1", 0.0) + hourly("quiet", WINDOW.start, 336, "1", 30.0),
    )
    assert set(_findings(any_engine)) == {"idle"}
    assert set(_findings(any_engine, replace(SETTINGS, idle_utilization_pct=Decimal("30.5")))) == {
        "idle",
        "quiet",
    }
    week = _findings(any_engine, replace(SETTINGS, idle_lookback_days=7))
    assert (week["idle"]["idle_days"], week["idle"]["observed_hours"]) == (7, 168)
    assert _findings(any_engine, replace(SETTINGS, idle_min_observed_hours=337)) == {}
    insert(any_engine, hourly("mostly", WINDOW.start, 10, "1", 90.0))
    insert(any_engine, hourly("mostly", WINDOW.start + 10 * H, 326, "1", 0.0))
    assert "mostly" in _findings(any_engine)  # 97% idle
    assert "mostly" not in _findings(any_engine, replace(SETTINGS, idle_min_idle_share_pct=Decimal("97.5")))


def test_empty_database(any_engine: Engine) -> None:
    evaluation = compute_idle_evaluation(any_engine, SETTINGS, AS_OF)
    assert evaluation.findings.empty and not evaluation.has_usage
    assert idle_spend_report(any_engine, SETTINGS, as_of=AS_OF).findings == ()


def test_stored_evaluations_and_open_recommendations(any_engine: Engine) -> None:
    with pytest.raises(NotMaterializedError, match="never been materialized"):
        load_idle_spend_report(any_engine)
    insert(any_engine, hourly("idle-h100", WINDOW.start, 336, "12.29", 0.5))
    insert(any_engine, hourly("new-l4", _last_hours(50), 50, "0.8048", 1.0, gpu_type="L4"))
    first = compute_idle_evaluation(any_engine, SETTINGS, AS_OF)
    assert write_idle_evaluation(any_engine, first) == 2
    assert write_idle_evaluation(any_engine, first) == 2  # the same instant is replaced
    assert table_count(any_engine, "idle_gpu_recommendations") == 2
    assert load_idle_spend_report(any_engine) == first.report()
    assert load_idle_spend_report(any_engine, ("high", "medium", "low")) == first.report(
        ("high", "medium", "low")
    )

    # A later evaluation (the H100 was put to work) becomes the open one; history is kept.
    insert(any_engine, hourly("idle-h100", WINDOW.end, 2, "12.29", 90.0))
    later = compute_idle_evaluation(any_engine, SETTINGS, AS_OF + 2 * H)
    write_idle_evaluation(any_engine, later)
    assert [f.resource_id for f in load_idle_spend_report(any_engine, ("high", "low")).findings] == ["new-l4"]
    assert table_count(any_engine, "idle_gpu_evaluations") == 2


def test_detail_wording() -> None:
    assert idle_detail(100, 14 * 24) == "100% idle for 14 days"
    assert idle_detail(100, 24) == "100% idle for 1 day"
    assert idle_detail(96, 1) == "96% idle for 1 hour"
