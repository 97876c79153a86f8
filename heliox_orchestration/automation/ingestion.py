"""Ingestion without a command: the FOCUS landing folder, the Prometheus pull, and detection
that follows the data.

* ``focus_landing_sensor`` (with ``HELIOX_FOCUS_DIR``): every 30 s, one ``focus_import_job`` run
  per new or changed export file (``ingest.landing`` decides; its state, with each file's
  SHA-256, is the sensor's cursor).
* ``gpu_utilization_pull_schedule`` (with ``PROMETHEUS_URL``): every hour at minute 10 (in
  ``TIMEZONE``), one run pulling the last ``REPULL_HOURS`` ended hours.
* ``new_usage_sensor``: every 10 s, each new materialization of ``gpu_usage_hourly`` (an import
  that wrote rows) becomes a refresh of ``daily_gpu_costs`` for the local days it touched, so
  today's burn rate is checked (``burn_rate_sensor``) as soon as today's usage lands, not at the
  next hourly check, which stays as the backstop.
"""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import time

from dagster import (
    AssetRecordsFilter,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from heliox_orchestration import clock
from heliox_orchestration.assets.focus_import import IMPORT_OP, focus_import_job
from heliox_orchestration.assets.keys import USAGE_KEY
from heliox_orchestration.assets.refresh import gpu_costs_refresh_job
from heliox_orchestration.assets.sources import landed_hours
from heliox_orchestration.assets.utilization import gpu_utilization_pull_job
from heliox_orchestration.ingest.landing import LandingState, plan_landing
from heliox_orchestration.partitions import local_days_of, merge_day_spans
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.run_config import op_config
from heliox_orchestration.settings import Settings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "heliox/trigger"

LANDING_INTERVAL_SECONDS = 30
# Hashing per tick stays well inside the daemon's 60 s limit for one sensor evaluation; files not
# reached are hashed on the next ticks.
HASH_BUDGET_SECONDS = 20.0
NEW_USAGE_INTERVAL_SECONDS = 10
USAGE_EVENTS_PER_TICK = 500
REPULL_HOURS = 3
PULL_CRON = "10 * * * *"


@sensor(
    name="focus_landing_sensor",
    job=focus_import_job,
    minimum_interval_seconds=LANDING_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches HELIOX_FOCUS_DIR: one focus_import_job run per new or changed FOCUS export "
    "(CSV, CSV.gz, Parquet). The same content is imported once; a changed file again. Its cursor "
    "holds each file's size, modification time and SHA-256.",
)
def focus_landing_sensor(context: SensorEvaluationContext, heliox_settings: HelioxSettings) -> SensorResult:
    folder = heliox_settings.get().focus_dir
    if folder is None:
        return SensorResult(skip_reason="HELIOX_FOCUS_DIR is not set.", cursor=context.cursor)
    if not folder.is_dir():
        return SensorResult(
            skip_reason=f"HELIOX_FOCUS_DIR={folder} is not a folder any more (unmounted?); nothing imported.",
            cursor=context.cursor,
        )
    plan = plan_landing(
        folder, LandingState.parse(context.cursor), time.time(), hash_budget=HASH_BUDGET_SECONDS
    )
    for path, original in plan.copies:
        context.log.info(f"{path} has the content of {original}, already seen: not imported again.")
    requests = [
        RunRequest(
            run_key=export.run_key,
            run_config=op_config(
                IMPORT_OP,
                file=export.relative,
                sha256=export.sha256,
                size_bytes=export.size,
                mtime_ns=export.mtime_ns,
            ),
            tags={"heliox/focus_file": export.relative, "heliox/sha256": export.sha256},
        )
        for export in plan.imports
    ]
    skip = None if requests else f"No new or changed export in {folder}: {plan.summary()}."
    return SensorResult(run_requests=requests, skip_reason=skip, cursor=plan.state.dump())


def refresh_request(settings: Settings, first: dt.date, last: dt.date, run_key: str) -> RunRequest:
    """A run of gpu_costs_refresh_job for the local days ``first``..``last`` (one run: the asset
    computes a range in one query)."""
    tags = {TRIGGER_TAG: "new-usage"}
    if first == last:
        return RunRequest(run_key=run_key, partition_key=first.isoformat(), tags=tags)
    tags |= {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
    return RunRequest(run_key=run_key, tags=tags)


@sensor(
    name="new_usage_sensor",
    job=gpu_costs_refresh_job,
    minimum_interval_seconds=NEW_USAGE_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="When an import writes usage rows (a materialization of gpu_usage_hourly), refreshes "
    "daily_gpu_costs for the local days it touched (up to today): today's burn rate is checked as "
    "soon as today's usage lands. The hourly burn_rate_check_schedule stays as the backstop.",
)
def new_usage_sensor(context: SensorEvaluationContext, heliox_settings: HelioxSettings) -> SensorResult:
    settings = heliox_settings.get()
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=USAGE_KEY, after_storage_id=after),
        limit=USAGE_EVENTS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return SensorResult(skip_reason="No new usage rows.", cursor=context.cursor)
    today = settings.today(clock.utc_now())
    spans = []
    for record in records:
        hours = landed_hours(record.asset_materialization.metadata) if record.asset_materialization else None
        if hours is None:
            continue
        first, last = local_days_of(*hours, settings.timezone)
        first, last = max(first, settings.start_date), min(last, today)
        if first <= last:
            spans.append((first, last))
    cursor = str(records[-1].storage_id)
    requests = [
        refresh_request(settings, first, last, f"new-usage:{cursor}:{first}..{last}")
        for first, last in merge_day_spans(spans)
    ]
    skip = None if requests else "New usage rows, but none of a day from HELIOX_START_DATE through today."
    return SensorResult(run_requests=requests, skip_reason=skip, cursor=cursor)


def build_utilization_schedule(settings: Settings, first_hour: dt.datetime) -> ScheduleDefinition:
    """The hourly pull of the last REPULL_HOURS ended hours (not before ``first_hour``, the first
    partition)."""

    @schedule(
        name="gpu_utilization_pull_schedule",
        cron_schedule=PULL_CRON,
        execution_timezone=settings.timezone,
        job=gpu_utilization_pull_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Pull the last {REPULL_HOURS} ended UTC hours of GPU utilization from Prometheus "
        "(re-pulling the older two: scrapes land late).",
    )
    def gpu_utilization_pull_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        end = context.scheduled_execution_time.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        start = max(end - dt.timedelta(hours=REPULL_HOURS), first_hour)
        last = end - dt.timedelta(hours=1)
        if last < start:
            return SkipReason(f"No hour has ended since HELIOX_START_DATE ({first_hour:%Y-%m-%d %H:%M} UTC).")
        tags = {TRIGGER_TAG: "utilization-pull"}
        if start == last:
            return RunRequest(partition_key=hour_key(start), tags=tags)
        tags |= {RANGE_START_TAG: hour_key(start), RANGE_END_TAG: hour_key(last)}
        return RunRequest(tags=tags)

    return gpu_utilization_pull_schedule


def hour_key(hour: dt.datetime) -> str:
    """The partition key of a UTC hour (HourlyPartitionsDefinition's format)."""
    return hour.astimezone(dt.UTC).strftime("%Y-%m-%d-%H:%M")
