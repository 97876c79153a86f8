"""Asset jobs that refresh the cost assets before an alert: the schedules launch these, and the
alert jobs follow once a refresh has succeeded (its checks included)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from heliox_orchestration.assets.keys import ANOMALIES_KEY, DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY

# Run monitoring fails a refresh run still going after this (docs/operations.md, "Run limits"):
# a refresh takes seconds, but a dead one holds back the burn-rate sensor until it has ended.
REFRESH_MAX_RUNTIME_SECONDS = 600
REFRESH_TAGS = {"dagster/max_runtime": str(REFRESH_MAX_RUNTIME_SECONDS)}

COSTS_REFRESH_JOB = "gpu_costs_refresh_job"
IDLE_REFRESH_JOB = "idle_recommendations_refresh_job"
SUMMARY_REFRESH_JOB = "daily_summary_refresh_job"
ANOMALIES_REFRESH_JOB = "spend_anomalies_refresh_job"

# Each asset's input check is part of the asset (its op refuses bad rows), so selecting the
# assets is enough; their output checks come with them.
gpu_costs_refresh_job = define_asset_job(
    COSTS_REFRESH_JOB,
    selection=AssetSelection.assets(DAILY_COSTS_KEY),
    description="Refresh one local day of daily_gpu_costs (hourly: today's spend so far).",
    tags=REFRESH_TAGS,
)
idle_recommendations_refresh_job = define_asset_job(
    IDLE_REFRESH_JOB,
    selection=AssetSelection.assets(IDLE_KEY),
    description="Re-evaluate idle-GPU recommendations over the trailing window.",
    tags=REFRESH_TAGS,
)
daily_summary_refresh_job = define_asset_job(
    SUMMARY_REFRESH_JOB,
    selection=AssetSelection.assets(DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY),
    description="A report date's daily_gpu_costs and gpu_cost_summary partitions, with fresh idle findings.",
    tags=REFRESH_TAGS,
)
# Its own job, launched after a checked refresh of daily_gpu_costs (spend_anomalies_sensor): a
# bad row among the 28 history days blocks the anomalies alone, never the burn-rate refresh.
spend_anomalies_refresh_job = define_asset_job(
    ANOMALIES_REFRESH_JOB,
    selection=AssetSelection.assets(ANOMALIES_KEY),
    description="Evaluate one local day of spend_anomalies (today: its hours so far).",
    tags=REFRESH_TAGS,
)
REFRESH_JOBS = [
    gpu_costs_refresh_job,
    idle_recommendations_refresh_job,
    daily_summary_refresh_job,
    spend_anomalies_refresh_job,
]
