"""The cost assets: daily GPU costs, idle-GPU recommendations and the daily summary, with their
asset checks. Built per ``Settings`` (partitions follow ``TIMEZONE``).

Each asset checks its own input rows (its ``valid_usage_rows`` check, evaluated by its op), so
selecting an asset selects its gate: no job or launch needs to add input checks."""

from __future__ import annotations

from dagster import Definitions

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
