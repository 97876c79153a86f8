"""The cost assets: daily GPU costs, idle-GPU recommendations and the daily summary, their checks
and the jobs that refresh them.

Each asset checks its own input rows (its ``valid_usage_rows`` check, evaluated by its op), so
selecting an asset selects its gate: no job or launch needs to add input checks. The two
partitioned assets are built for the local-day partitions of ``TIMEZONE`` (a load-time value);
everything else is defined once, at module level."""

from __future__ import annotations

from dagster import AssetsDefinition, AssetSpec, DailyPartitionsDefinition, Definitions

from heliox_orchestration.assets.anomalies import build_spend_anomalies
from heliox_orchestration.assets.checks import OUTPUT_CHECKS
from heliox_orchestration.assets.costs import build_daily_gpu_costs
from heliox_orchestration.assets.keys import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY, USAGE_KEY
from heliox_orchestration.assets.recommendations import idle_gpu_recommendations
from heliox_orchestration.assets.refresh import REFRESH_JOBS
from heliox_orchestration.assets.sources import usage_sources
from heliox_orchestration.assets.summary import build_gpu_cost_summary
from heliox_orchestration.partitions import daily_partitions
from heliox_orchestration.settings import Settings

__all__ = [
    "DAILY_COSTS_KEY",
    "IDLE_KEY",
    "OUTPUT_CHECKS",
    "REFRESH_JOBS",
    "SUMMARY_KEY",
    "USAGE_KEY",
    "build_asset_defs",
    "cost_assets",
]


def cost_assets(
    partitions: DailyPartitionsDefinition, *, with_telemetry: bool = False
) -> list[AssetsDefinition | AssetSpec]:
    """The cost assets, and ``gpu_usage_hourly`` with its sources upstream (``with_telemetry``:
    the Prometheus asset is part of the definitions too)."""
    return [
        *usage_sources(with_telemetry),
        build_daily_gpu_costs(partitions),
        idle_gpu_recommendations,
        build_gpu_cost_summary(partitions),
        build_spend_anomalies(partitions),
    ]


def build_asset_defs(settings: Settings) -> Definitions:
    """The assets and their checks alone (tests and the benchmark materialize them)."""
    return Definitions(assets=cost_assets(daily_partitions(settings)), asset_checks=OUTPUT_CHECKS)
