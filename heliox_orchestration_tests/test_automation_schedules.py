"""Schedules in TIMEZONE: crons from settings, partition keys on DST change days, valid config;
and bad settings failing definition loading with one clear message."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
from dagster import Definitions, build_schedule_context, validate_run_config
from dagster._utils.schedules import cron_string_iterator

from heliox_orchestration.definitions import build_defs
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings, SettingsError, load_settings

LA = ZoneInfo("America/Los_Angeles")


def _defs(**env: str) -> Definitions:
    return build_defs(load_settings(env))


def _tick(defs: Definitions, name: str, local: dt.datetime):  # type: ignore[no-untyped-def]
    schedule = defs.resolve_schedule_def(name)
    context = build_schedule_context(scheduled_execution_time=local, repository_def=defs.get_repository_def())
    (request,) = schedule.evaluate_tick(context).run_requests or []
    return schedule, request


def test_crons_and_timezone_follow_settings() -> None:
    defs = _defs(
        TIMEZONE="Europe/London",
        DAILY_SUMMARY_HOUR="7",
        BURN_RATE_CHECK_CRON="30 6-22 * * 1-5",
        IDLE_SPEND_CHECK_CRON="0 11 * * *",
    )
    crons = {s.name: (s.cron_schedule, s.execution_timezone) for s in defs.schedules}  # type: ignore[union-attr]
    assert crons == {
        "burn_rate_check_schedule": ("30 6-22 * * 1-5", "Europe/London"),
        "idle_spend_check_schedule": ("0 11 * * *", "Europe/London"),
        "daily_summary_schedule": ("0 7 * * *", "Europe/London"),
        "usage_maintenance_schedule": ("30 3 * * *", "Europe/London"),
    }
    defaults = {s.name: s.cron_schedule for s in _defs().schedules}  # type: ignore[union-attr]
    assert defaults == {
        "burn_rate_check_schedule": "0 8-20 * * *",
        "idle_spend_check_schedule": "0 10,16 * * *",
        "daily_summary_schedule": "0 9 * * *",
        "usage_maintenance_schedule": "30 3 * * *",
    }
    assert all(s.default_status.value == "RUNNING" for s in defs.schedules)  # type: ignore[union-attr]
    assert all(s.default_status.value == "RUNNING" for s in defs.sensors)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("day", "hours"),
    [(dt.date(2026, 3, 8), 23), (dt.date(2026, 11, 1), 25), (dt.date(2026, 6, 1), 24)],
)
def test_burn_rate_ticks_on_dst_days_refresh_that_local_day(day: dt.date, hours: int) -> None:
    defs = _defs(TIMEZONE="America/Los_Angeles")
    schedule = defs.resolve_schedule_def("burn_rate_check_schedule")
    start = dt.datetime.combine(day, dt.time(), LA)
    ticks = []
    for tick in cron_string_iterator(start.timestamp(), schedule.cron_schedule, "America/Los_Angeles"):
        if tick.date() != day:
            break
        ticks.append(tick)
    # 8 AM to 8 PM local, every hour, whatever the length of the day.
    assert [t.hour for t in ticks] == list(range(8, 21))
    elapsed = (ticks[-1].astimezone(dt.UTC) - ticks[0].astimezone(dt.UTC)) / dt.timedelta(hours=1)
    assert elapsed == 12
    for tick in (ticks[0], ticks[-1]):
        _, request = _tick(defs, "burn_rate_check_schedule", tick)
        assert request.partition_key == day.isoformat()
    start_utc, end_utc = local_day_bounds(day, "America/Los_Angeles")
    assert (end_utc - start_utc) / dt.timedelta(hours=1) == hours


def test_daily_summary_on_dst_days_reports_the_local_yesterday() -> None:
    defs = _defs(TIMEZONE="America/Los_Angeles", DAILY_SUMMARY_HOUR="0")
    for day in (dt.date(2026, 3, 8), dt.date(2026, 11, 1)):
        # Midnight local is 07:00 or 08:00 UTC: the UTC date would be right, the hour would not.
        local_midnight = dt.datetime.combine(day, dt.time(), LA)
        schedule, request = _tick(defs, "daily_summary_schedule", local_midnight)
        yesterday = (day - dt.timedelta(days=1)).isoformat()
        assert request.partition_key == yesterday
        assert request.tags["heliox/report_date"] == yesterday  # the partition is the report date
        job = defs.resolve_job_def(schedule.job_name)
        validate_run_config(job, request.run_config)


def test_late_evening_tick_in_los_angeles_is_still_the_local_day() -> None:
    defs = _defs(TIMEZONE="America/Los_Angeles")
    # 20:00 PST on 2026-01-09 is 04:00 UTC on 2026-01-10.
    local = dt.datetime(2026, 1, 9, 20, tzinfo=LA)
    _, request = _tick(defs, "burn_rate_check_schedule", local)
    assert request.partition_key == "2026-01-09"


def test_alert_job_run_configs_validate() -> None:
    defs = build_defs(Settings())
    validate_run_config(
        defs.resolve_job_def("burn_rate_alert_job"),
        {"ops": {"send_burn_rate_alert": {"config": {"day": "2026-01-09"}}}},
    )
    validate_run_config(
        defs.resolve_job_def("daily_summary_job"),
        {"ops": {"send_daily_summary": {"config": {"report_date": "2026-01-08"}}}},
    )
    for name in ("burn_rate_alert_job", "idle_spend_alert_job", "daily_summary_job", "stale_data_alert_job"):
        job = defs.resolve_job_def(name)
        assert job.tags["dagster/max_runtime"] == "300"
        validate_run_config(job, {})


BAD_SETTINGS = [
    ("TIMEZONE", "Mars/Olympus", "TIMEZONE='Mars/Olympus' is not an IANA time zone"),
    ("DAILY_SUMMARY_HOUR", "24", "DAILY_SUMMARY_HOUR=24 is out of range; allowed: 0-23"),
    ("BURN_RATE_THRESHOLD_USD", "-5", "BURN_RATE_THRESHOLD_USD=-5 is out of range"),
    ("BURN_RATE_THRESHOLD_USD", "lots", "BURN_RATE_THRESHOLD_USD='lots' is not a number"),
    ("BURN_RATE_ESCALATION_PCT", "90,150", "every level must be above 100"),
    ("BURN_RATE_CHECK_CRON", "every hour", "BURN_RATE_CHECK_CRON='every hour' is not a valid cron"),
    ("SLACK_WEBHOOK_URL", "not a url", "SLACK_WEBHOOK_URL"),
]


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_SETTINGS)
def test_bad_configuration_fails_building_definitions(
    variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        build_defs(load_settings())
    assert expected in str(raised.value)
    if variable == "SLACK_WEBHOOK_URL":
        assert value not in str(raised.value)


def test_bad_configuration_fails_loading_the_code_location() -> None:
    """`dagster dev` imports the code location the way this fresh process does."""
    env = {"PATH": os.environ.get("PATH", ""), "HELIOX_DATA_DIR": "/nonexistent", "TIMEZONE": "Mars/Olympus"}
    result = subprocess.run(
        [sys.executable, "-c", "import heliox_orchestration.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "TIMEZONE='Mars/Olympus' is not an IANA time zone" in last_line, last_line
