"""Materializing the cost assets in tests: one in-process run against a Heliox database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize
from sqlalchemy import Engine

from heliox_orchestration.assets import DAILY_COSTS_KEY, build_asset_defs
from heliox_orchestration.ingest.demo_fleet import FleetSpec
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import engine_url, utc

SETTINGS = Settings(timezone="America/Los_Angeles")
NOW = utc(2026, 1, 21, 12) + dt.timedelta(minutes=30)
END = dt.date(2026, 1, 20)
FLEET = FleetSpec(gpus=20, days=20, end_date=END, seed=17, timezone=SETTINGS.timezone)
# The run tags Dagster puts on a single-run backfill (and `dagster asset materialize --partition-range`).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run(
    engine: Engine,
    instance: DagsterInstance,
    selection: AssetSelection,
    *,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    settings: Settings = SETTINGS,
) -> ExecuteInProcessResult:
    defs = build_asset_defs(settings)
    return materialize(
        [*defs.assets, *defs.asset_checks],  # type: ignore[list-item]
        selection=selection,
        partition_key=partition_key,
        tags=tags,
        run_config={"ops": {op: {"config": c} for op, c in (config or {}).items()}},
        resources={
            "heliox_db": HelioxDatabase(url=engine_url(engine)),
            "heliox_settings": HelioxSettings.of(settings),
        },
        instance=instance,
        raise_on_error=False,
    )


def daily() -> AssetSelection:
    """daily_gpu_costs with its checks: its own input check and its output checks."""
    return AssetSelection.assets(DAILY_COSTS_KEY)


def idle_config() -> dict[str, Any]:
    return {"idle_gpu_recommendations": {"as_of": NOW.isoformat()}}


def metadata_of(result: ExecuteInProcessResult, key: Any) -> list[dict[str, Any]]:
    return [
        {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == key
    ]


def checks_of(result: ExecuteInProcessResult) -> dict[str, Any]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}
