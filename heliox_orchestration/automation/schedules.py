"""Schedules, all in ``TIMEZONE`` and running by default; their crons come from settings."""

# No `from __future__ import annotations`: Dagster inspects the schedule functions' context type.

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from heliox_orchestration.assets.maintenance import USAGE_MAINTENANCE_JOB
from heliox_orchestration.assets.refresh import COSTS_REFRESH_JOB, IDLE_REFRESH_JOB, SUMMARY_REFRESH_JOB
from heliox_orchestration.settings import Settings

# A quiet hour in TIMEZONE, before the daily summary's default hour (9).
USAGE_MAINTENANCE_CRON = "30 3 * * *"


def build_schedules(settings: Settings) -> list[ScheduleDefinition]:
    """The three checks' schedules and the usage upkeep's: their crons and time zone are
    load-time settings."""
    running = DefaultScheduleStatus.RUNNING

    @schedule(
        name="burn_rate_check_schedule",
        cron_schedule=settings.burn_rate_check_cron,
        execution_timezone=settings.timezone,
        job_name=COSTS_REFRESH_JOB,
        default_status=running,
        description="Refresh today's daily_gpu_costs partition; the burn-rate sensor alerts on it.",
    )
    def burn_rate_check_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        # The local day of the tick's scheduled time, not of when the daemon ran it.
        day = settings.today(context.scheduled_execution_time)
        return RunRequest(partition_key=day.isoformat(), tags={"heliox/trigger": "burn-rate-check"})

    @schedule(
        name="idle_spend_check_schedule",
        cron_schedule=settings.idle_spend_check_cron,
        execution_timezone=settings.timezone,
        job_name=IDLE_REFRESH_JOB,
        default_status=running,
        description="Re-evaluate idle GPUs; the idle-spend alert follows a successful refresh.",
    )
    def idle_spend_check_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(tags={"heliox/trigger": "idle-spend-check"})

    @schedule(
        name="daily_summary_schedule",
        cron_schedule=settings.daily_summary_cron,
        execution_timezone=settings.timezone,
        job_name=SUMMARY_REFRESH_JOB,
        default_status=running,
        description="Materialize yesterday's costs and summary partitions; the daily summary follows.",
    )
    def daily_summary_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        report_date = settings.yesterday(context.scheduled_execution_time)
        return RunRequest(
            partition_key=report_date.isoformat(),
            tags={"heliox/trigger": "daily-summary", "heliox/report_date": report_date.isoformat()},
        )

    @schedule(
        name="usage_maintenance_schedule",
        cron_schedule=USAGE_MAINTENANCE_CRON,
        execution_timezone=settings.timezone,
        job_name=USAGE_MAINTENANCE_JOB,
        default_status=running,
        description="Daily: drop usage rows outside HELIOX_RETENTION_DAYS, create coming month partitions.",
    )
    def usage_maintenance_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(tags={"heliox/trigger": "usage-maintenance"})

    return [
        burn_rate_check_schedule,
        idle_spend_check_schedule,
        daily_summary_schedule,
        usage_maintenance_schedule,
    ]
