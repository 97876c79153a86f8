"""Asset jobs that refresh the cost assets before an alert: the schedules launch these, and the
alert jobs follow once a refresh has succeeded (its blocking checks included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetSelection, define_asset_job

from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY

if TYPE_CHECKING:  # define_asset_job's return type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# Run monitoring fails a refresh run still going after this (docs/operations.md, "Run limits"):
# a refresh takes seconds, but a dead one holds back the burn-rate sensor until it has ended.
REFRESH_MAX_RUNTIME_SECONDS = 600
REFRESH_TAGS = {"dagster/max_runtime": str(REFRESH_MAX_RUNTIME_SECONDS)}

COSTS_REFRESH_JOB = "gpu_costs_refresh_job"
IDLE_REFRESH_JOB = "idle_recommendations_refresh_job"
SUMMARY_REFRESH_JOB = "daily_summary_refresh_job"


def build_refresh_jobs() -> list[UnresolvedAssetJobDefinition]:
    # Each asset's input check is part of the asset (its op refuses bad rows), so selecting the
    # assets is enough; their output checks come with them.
    return [
        define_asset_job(
            COSTS_REFRESH_JOB,
            selection=AssetSelection.assets(DAILY_COSTS_KEY),
            description="Refresh one local day of daily_gpu_costs (hourly: today's spend so far).",
            tags=REFRESH_TAGS,
        ),
        define_asset_job(
            IDLE_REFRESH_JOB,
            selection=AssetSelection.assets(IDLE_KEY),
            description="Re-evaluate idle-GPU recommendations over the trailing window.",
            tags=REFRESH_TAGS,
        ),
        define_asset_job(
            SUMMARY_REFRESH_JOB,
            selection=AssetSelection.assets(DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY),
            description="Yesterday's daily_gpu_costs, fresh idle findings and the daily summary numbers.",
            tags=REFRESH_TAGS,
        ),
    ]
