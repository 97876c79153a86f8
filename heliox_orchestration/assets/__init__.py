"""The cost assets: daily GPU costs, idle-GPU recommendations and the daily summary, with their
asset checks. Built per ``Settings`` (partitions follow ``TIMEZONE``)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions

from heliox_orchestration.assets.checks import build_asset_checks
from heliox_orchestration.assets.costs import build_daily_gpu_costs, usage_spec
from heliox_orchestration.assets.recommendations import build_idle_gpu_recommendations
from heliox_orchestration.assets.shared import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY, USAGE_KEY
from heliox_orchestration.assets.summary import build_gpu_cost_summary
from heliox_orchestration.settings import Settings

__all__ = [
    "DAILY_COSTS_KEY",
    "IDLE_KEY",
    "SUMMARY_KEY",
    "USAGE_KEY",
    "build_asset_defs",
    "cost_input_checks",
]


def build_asset_defs(settings: Settings) -> Definitions:
    return Definitions(
        assets=[
            usage_spec(),
            build_daily_gpu_costs(settings),
            build_idle_gpu_recommendations(settings),
            build_gpu_cost_summary(settings),
        ],
        asset_checks=build_asset_checks(settings),
    )


def cost_input_checks() -> AssetSelection:
    """The blocking checks of ``gpu_usage_hourly``. Add them to a job's selection so that bad
    usage rows stop the cost assets (and the alerts after them) in the same run; Dagster does
    not include an external asset's checks on its own."""
    return AssetSelection.checks_for_assets(USAGE_KEY)
