"""Asset checks: bad input rows stop the cost assets, bad outputs stop what is downstream."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, instance_for_test
from sqlalchemy import Engine

from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY, cost_input_checks
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration_tests.crafted import hourly, insert, row, table_count, utc
from heliox_orchestration_tests.runs import SETTINGS, checks_of, idle_config, run

DAY = dt.date(2026, 1, 15)
KEY = DAY.isoformat()
START, END = local_day_bounds(DAY, SETTINGS.timezone)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _daily_with_input_checks() -> AssetSelection:
    return AssetSelection.assets(DAILY_COSTS_KEY) | cost_input_checks()


def _materialized(result: Any) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        (row("refund", START + dt.timedelta(hours=5), "-12.29"), "1 row with negative cost_usd"),
        (
            row("sensor", START + dt.timedelta(hours=6), "1", 150.0),
            "1 row with gpu_utilization_pct outside 0-100",
        ),
        (row("blank", START + dt.timedelta(hours=7), "1", provider=" "), "1 row with NULL or blank key"),
    ],
)
def test_bad_usage_rows_block_the_daily_costs(
    any_engine: Engine, instance: DagsterInstance, bad_row: dict[str, Any], problem: str
) -> None:
    insert(any_engine, [*hourly("good", START, 24, "1", 50.0), bad_row])
    result = run(any_engine, instance, _daily_with_input_checks(), partition_key=KEY)
    assert not result.success
    check = checks_of(result)["gpu_usage_hourly:valid_rows"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.description.startswith(problem)
    assert "2026-01-15 (America/Los_Angeles)" in check.description
    assert bad_row["resource_id"] in check.metadata["examples"].value
    assert _materialized(result) == set()
    assert table_count(any_engine, "daily_gpu_costs") == 0


def test_bad_rows_of_other_days_do_not_block_a_partition(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    insert(sqlite_engine, [*hourly("good", START, 24, "1", 50.0), row("refund", END, "-5")])
    result = run(sqlite_engine, instance, _daily_with_input_checks(), partition_key=KEY)
    assert result.success
    assert checks_of(result)["gpu_usage_hourly:valid_rows"].passed


def test_future_usage_hours_block_the_daily_costs(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    later = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=3)
    insert(sqlite_engine, [*hourly("good", START, 24, "1", 50.0), row("tz-bug", later, "1")])
    result = run(sqlite_engine, instance, _daily_with_input_checks(), partition_key=KEY)
    check = checks_of(result)["gpu_usage_hourly:no_future_hours"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert "tz-bug" in check.metadata["examples"].value
    assert _materialized(result) == set()


def test_gap_day_warns_without_blocking(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    insert(sqlite_engine, hourly("good", START - dt.timedelta(days=1), 24, "1", 50.0))
    result = run(sqlite_engine, instance, _daily_with_input_checks(), partition_key=KEY)
    assert result.success
    gap = checks_of(result)["daily_gpu_costs:no_gap_days"]
    assert not gap.passed and gap.severity == AssetCheckSeverity.WARN
    assert gap.description.startswith("No usage data at all on 2026-01-15")


def test_a_failing_output_check_stops_the_summary(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    # Without the input checks in the run, the negative day reaches daily_gpu_costs; its own
    # blocking check then keeps the summary (and any alert after it) from running.
    insert(
        sqlite_engine, [*hourly("good", START, 2, "1", 50.0), row("refund", START, "-500", model_name="x")]
    )
    selection = AssetSelection.assets(DAILY_COSTS_KEY, SUMMARY_KEY)
    config = {"gpu_cost_summary": {"report_date": KEY}}
    result = run(sqlite_engine, instance, selection, partition_key=KEY, config=config)
    assert not result.success
    check = checks_of(result)["daily_gpu_costs:valid_rows"]
    assert not check.passed and check.description.startswith("1 row with negative cost_usd")
    assert _materialized(result) == {"daily_gpu_costs"}
    assert table_count(sqlite_engine, "gpu_cost_summary") == 0


def test_invalid_idle_findings_block_the_summary(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    as_of = utc(2026, 1, 21, 12)
    insert(sqlite_engine, hourly("credited", as_of - dt.timedelta(days=14), 336, "-1", 0.0))
    selection = AssetSelection.assets(IDLE_KEY, SUMMARY_KEY)
    config = idle_config() | {"gpu_cost_summary": {"report_date": "2026-01-20"}}
    result = run(sqlite_engine, instance, selection, config=config)
    assert not result.success
    check = checks_of(result)["idle_gpu_recommendations:valid_findings"]
    assert not check.passed and "negative monthly_savings_usd" in check.description
    assert _materialized(result) == {"idle_gpu_recommendations"}


def test_usage_checks_of_an_unpartitioned_run_judge_the_idle_window(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    as_of = utc(2026, 1, 21, 12)
    insert(sqlite_engine, [row("refund", as_of - dt.timedelta(days=3), "-1", 0.0)])
    result = run(
        sqlite_engine, instance, AssetSelection.assets(IDLE_KEY) | cost_input_checks(), config=idle_config()
    )
    check = checks_of(result)["gpu_usage_hourly:valid_rows"]
    assert not check.passed and "the idle window ending 2026-01-21 12:00 UTC" in check.description
    assert _materialized(result) == set()
