"""Automation: schedules refresh the cost assets in ``TIMEZONE``; sensors turn successful
refreshes into alert runs, watch for stale data and report failed runs."""

from __future__ import annotations

from dagster import Definitions

from heliox_orchestration.alerts.jobs import build_alert_jobs
from heliox_orchestration.automation.refresh_jobs import build_refresh_jobs
from heliox_orchestration.automation.schedules import build_schedules
from heliox_orchestration.automation.sensors import build_sensors
from heliox_orchestration.settings import Settings


def build_automation_defs(settings: Settings) -> Definitions:
    alert_jobs = build_alert_jobs(settings)
    refresh_jobs = build_refresh_jobs()
    return Definitions(
        jobs=[*alert_jobs, *refresh_jobs],
        schedules=build_schedules(settings),
        sensors=build_sensors(settings, alert_jobs, refresh_jobs),
    )
