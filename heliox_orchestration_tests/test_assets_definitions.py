"""The cost assets as the Dagster UI shows them: keys, partitions, policies, checks."""

from __future__ import annotations

import datetime as dt

from dagster import AssetsDefinition, BackfillPolicy, DailyPartitionsDefinition, Definitions

from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY, USAGE_KEY, build_asset_defs
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.settings import Settings

SETTINGS = Settings(timezone="America/Los_Angeles")


def test_code_location_includes_the_cost_assets() -> None:
    defs = build_defs(SETTINGS)
    Definitions.validate_loadable(defs)
    assert {USAGE_KEY, DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY} <= set(defs.resolve_all_asset_keys())


def test_asset_specs() -> None:
    specs = {s.key: s for s in build_defs(SETTINGS).resolve_all_asset_specs()}
    for key in (DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY):
        assert specs[key].kinds == {"pandas", "sql"}
        assert specs[key].group_name == "gpu_costs"
        assert specs[key].description and len(specs[key].description) > 100
        assert specs[key].metadata["dagster/table_name"] == key.path[-1]
    assert {d.asset_key for d in specs[DAILY_COSTS_KEY].deps} == {USAGE_KEY}
    assert {d.asset_key for d in specs[SUMMARY_KEY].deps} == {DAILY_COSTS_KEY, IDLE_KEY}
    assert specs[USAGE_KEY].partitions_def is None and specs[IDLE_KEY].partitions_def is None


def test_daily_partitions_follow_the_settings() -> None:
    defs = build_defs(SETTINGS)
    partitions = defs.resolve_assets_def(DAILY_COSTS_KEY).partitions_def
    assert isinstance(partitions, DailyPartitionsDefinition)
    assert partitions.timezone == "America/Los_Angeles"
    assert partitions.get_first_partition_key() == "2025-01-01"
    # Today is a partition: the burn-rate alert watches today's spend so far.
    evening = dt.datetime(2026, 3, 8, 23, 30, tzinfo=SETTINGS.tz)
    assert partitions.get_partition_keys(current_time=evening)[-1] == "2026-03-08"
    assert defs.resolve_assets_def(DAILY_COSTS_KEY).backfill_policy == BackfillPolicy.single_run()

    utc_defs = build_defs(Settings(start_date=dt.date(2026, 1, 1)))
    utc_partitions = utc_defs.resolve_assets_def(DAILY_COSTS_KEY).partitions_def
    assert isinstance(utc_partitions, DailyPartitionsDefinition)
    assert utc_partitions.timezone == "UTC" and utc_partitions.get_first_partition_key() == "2026-01-01"


def test_checks_and_which_ones_block() -> None:
    # The input checks are each asset's own (check_specs, evaluated by its op); the output checks
    # are separate. The gpu_usage_hourly checks of earlier versions became the assets' own.
    defs = build_asset_defs(SETTINGS)
    specs = {
        (spec.asset_key.to_user_string(), spec.name): spec
        for definition in [*(defs.assets or []), *(defs.asset_checks or [])]
        if isinstance(definition, AssetsDefinition)
        for spec in definition.check_specs
    }
    assert {name: spec.blocking for name, spec in specs.items()} == {
        ("daily_gpu_costs", "valid_usage_rows"): True,
        ("daily_gpu_costs", "no_future_usage"): False,
        ("daily_gpu_costs", "valid_rows"): True,
        ("daily_gpu_costs", "no_gap_days"): False,
        ("idle_gpu_recommendations", "valid_usage_rows"): False,
        ("idle_gpu_recommendations", "valid_findings"): True,
        ("gpu_cost_summary", "valid_usage_rows"): True,
        ("gpu_cost_summary", "valid_findings"): True,
        ("spend_anomalies", "valid_usage_rows"): True,
    }
    for spec in specs.values():
        assert spec.description and ("Blocking." if spec.blocking else "Warning.") in spec.description
