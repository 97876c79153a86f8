"""The Heliox code location.

Everything is defined once, at module level, in the modules that own it; only what the
environment decides when the definitions load is built here from the settings: the local-day
partitions (``TIMEZONE``, ``HELIOX_START_DATE``) of the two partitioned assets, the hourly
partitions of ``gpu_utilization_hourly`` and the schedules' crons. Ops, sensors and checks read
the run-time settings from the ``heliox_settings`` resource.

Two sources are optional: without ``PROMETHEUS_URL`` the utilization asset, its job and its
schedule are not defined (nor the ``prometheus`` resource); without ``HELIOX_FOCUS_DIR`` the
landing folder's sensor and import job are not.
"""

from __future__ import annotations

import warnings
from typing import Any

from dagster import BetaWarning, Definitions, in_process_executor

from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.jobs import alert_jobs
from heliox_orchestration.alerts.routes import webhook_variables
from heliox_orchestration.assets import OUTPUT_CHECKS, REFRESH_JOBS, cost_assets
from heliox_orchestration.assets.focus_import import focus_import_job
from heliox_orchestration.assets.maintenance import usage_maintenance_job
from heliox_orchestration.assets.utilization import (
    build_gpu_utilization_hourly,
    gpu_utilization_pull_job,
    utilization_partitions,
)
from heliox_orchestration.automation.ingestion import (
    build_utilization_schedule,
    focus_landing_sensor,
    new_usage_sensor,
)
from heliox_orchestration.automation.schedules import build_schedules
from heliox_orchestration.automation.sensors import alert_sensors
from heliox_orchestration.environment import load_environment
from heliox_orchestration.partitions import daily_partitions
from heliox_orchestration.resources.definitions import heliox_resources
from heliox_orchestration.settings import Settings

# Dagster 1.13 itself passes `owners` when it binds resources to a sensor's jobs, warning on every
# load about a beta parameter Heliox never sets. Only that exact message is ignored.
warnings.filterwarnings(
    "ignore", message=r"Parameter `owners` of initializer `SensorDefinition.__init__`", category=BetaWarning
)


def build_defs(settings: Settings) -> Definitions:
    with_telemetry = settings.prometheus_url is not None
    assets: list[Any] = cost_assets(daily_partitions(settings), with_telemetry=with_telemetry)
    jobs: list[Any] = [*REFRESH_JOBS, *alert_jobs(), usage_maintenance_job]
    schedules: list[Any] = build_schedules(settings)
    sensors: list[Any] = [*alert_sensors(), new_usage_sensor]
    if with_telemetry:
        hours = utilization_partitions(settings)
        assets.append(build_gpu_utilization_hourly(hours))
        jobs.append(gpu_utilization_pull_job)
        schedules.append(build_utilization_schedule(settings, hours.start))
    if settings.focus_dir is not None:
        jobs.append(focus_import_job)
        sensors.append(focus_landing_sensor)
    return Definitions(
        assets=assets,
        asset_checks=OUTPUT_CHECKS,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=heliox_resources(settings, webhook_variables(settings, all_kinds())),
        # Every run executes its steps in its run worker. Dagster's default starts one more
        # process per step, each importing Heliox again (about 3 CPU-seconds): on 2 cores that
        # tripled a refresh run and put the import -> Slack path past 90 s. No Heliox job has
        # steps that could run in parallel to any benefit.
        executor=in_process_executor,
    )


defs = build_defs(load_environment())
