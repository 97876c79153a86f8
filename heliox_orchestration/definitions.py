"""The Heliox code location.

Everything is defined once, at module level, in the modules that own it; only what the
environment decides when the definitions load is built here from the settings: the local-day
partitions (``TIMEZONE``, ``HELIOX_START_DATE``) of the two partitioned assets and the schedules'
crons. Ops, sensors and checks read the run-time settings from the ``heliox_settings`` resource.
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.jobs import alert_jobs
from heliox_orchestration.alerts.routes import webhook_variables
from heliox_orchestration.assets import OUTPUT_CHECKS, REFRESH_JOBS, cost_assets
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
    return Definitions(
        assets=cost_assets(daily_partitions(settings)),
        asset_checks=OUTPUT_CHECKS,
        jobs=[*REFRESH_JOBS, *alert_jobs()],
        schedules=build_schedules(settings),
        sensors=alert_sensors(),
        resources=heliox_resources(settings, webhook_variables(settings, all_kinds())),
    )


defs = build_defs(load_environment())
