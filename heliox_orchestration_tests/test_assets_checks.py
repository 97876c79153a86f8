"""Asset checks: each cost asset refuses input rows that fail the rules (its own check, however it
is launched), bad outputs stop what is downstream, and a bad row blocks only what it changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetSelection, DagsterInstance, instance_for_test
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY
from heliox_orchestration.db.schema import daily_gpu_costs, idle_gpu_recommendations
from heliox_orchestration.detections.idle import load_idle_evaluation
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration_tests.crafted import hourly, insert, row, table_count, utc
from heliox_orchestration_tests.runs import NOW, SETTINGS, checks_of, daily, idle_config, run

DAY = dt.date(2026, 1, 15)
KEY = DAY.isoformat()
START, END = local_day_bounds(DAY, SETTINGS.timezone)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _materialized(result: Any) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_message(result: Any) -> str:
    (failure,) = result.get_step_failure_events()
    return str(failure.step_failure_data.user_failure_data.description)


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        (row("refund", START + dt.timedelta(hours=5), "-12.29"), "1 row with negative cost_usd"),
        (
            row("sensor", START + dt.timedelta(hours=6), "1", 150.0),
            "1 row with gpu_utilization_pct outside 0-100",
        ),
        (row("blank", START + dt.timedelta(hours=7), "1", provider=" "), "1 row with NULL or blank key"),
        (row("typo", START + dt.timedelta(hours=8), "12000"), "1 row with cost_usd above $10,000.00 an hour"),
    ],
)
def test_bad_usage_rows_block_the_daily_costs(
    any_engine: Engine, instance: DagsterInstance, bad_row: dict[str, Any], problem: str
) -> None:
    # Moved from the gpu_usage_hourly:valid_rows check, now daily_gpu_costs' own input check.
    insert(any_engine, [*hourly("good", START, 24, "1", 50.0), bad_row])
    result = run(any_engine, instance, daily(), partition_key=KEY)
    assert not result.success
    check = checks_of(result)["daily_gpu_costs:valid_usage_rows"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.description.startswith(problem)
    assert "2026-01-15 (America/Los_Angeles)" in check.description
    assert bad_row["resource_id"] in check.metadata["examples"].value
    assert _materialized(result) == set()
    assert table_count(any_engine, "daily_gpu_costs") == 0
    # One line naming the rule, the count, the row and what to do; never retried.
    message = failure_message(result)
    assert "\n" not in message and message.startswith(
        "daily_gpu_costs 2026-01-15 was not written: " + problem
    )
    assert f"{bad_row['resource_id']!r} at {bad_row['usage_hour']:%Y-%m-%d %H:%M} UTC" in message
    assert "Fix them in gpu_usage_hourly" in message and "re-materialize 2026-01-15" in message


def test_bad_rows_of_other_days_do_not_block_a_partition(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    insert(sqlite_engine, [*hourly("good", START, 24, "1", 50.0), row("refund", END, "-5")])
    result = run(sqlite_engine, instance, daily(), partition_key=KEY)
    assert result.success
    assert checks_of(result)["daily_gpu_costs:valid_usage_rows"].passed


def test_a_future_hour_blocks_only_its_own_day(
    sqlite_engine: Engine, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10:00 on the 15th: a row at 20:00 the same local day is in today's numbers; one of 2099 is
    # in no alert's numbers.
    monkeypatch.setattr(clock, "utc_now", lambda: START + dt.timedelta(hours=10))
    later_today = row("tz-bug", START + dt.timedelta(hours=20), "1")
    far = row("typo-2099", utc(2099, 1, 1), "1")
    insert(sqlite_engine, [*hourly("good", START, 10, "1", 50.0), later_today, far])

    today = run(sqlite_engine, instance, daily(), partition_key=KEY)
    assert not today.success and _materialized(today) == set()
    check = checks_of(today)["daily_gpu_costs:valid_usage_rows"]
    assert check.description.startswith("1 row with usage_hour later than now")
    assert "'tz-bug' at 2026-01-16 04:00 UTC" in failure_message(today)

    yesterday = run(sqlite_engine, instance, daily(), partition_key="2026-01-14")
    assert yesterday.success
    warning = checks_of(yesterday)["daily_gpu_costs:no_future_usage"]
    assert not warning.passed and warning.severity == AssetCheckSeverity.WARN
    assert warning.description.startswith("2 rows with usage_hour later than now")
    assert (
        "typo-2099" in warning.metadata["examples"].value and "tz-bug" in warning.metadata["examples"].value
    )


def test_gap_day_warns_without_blocking(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    insert(sqlite_engine, hourly("good", START - dt.timedelta(days=1), 24, "1", 50.0))
    result = run(sqlite_engine, instance, daily(), partition_key=KEY)
    assert result.success
    gap = checks_of(result)["daily_gpu_costs:no_gap_days"]
    assert not gap.passed and gap.severity == AssetCheckSeverity.WARN
    assert gap.description.startswith("No usage data at all on 2026-01-15")


def test_a_bad_day_stops_the_summary(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    # Moved: this used to pass the negative row into daily_gpu_costs (the input checks were not in
    # the run) and stop at its output check. Now the asset refuses the row itself.
    insert(
        sqlite_engine, [*hourly("good", START, 2, "1", 50.0), row("refund", START, "-500", model_name="x")]
    )
    selection = AssetSelection.assets(DAILY_COSTS_KEY, SUMMARY_KEY)
    result = run(sqlite_engine, instance, selection, partition_key=KEY)
    assert not result.success
    check = checks_of(result)["daily_gpu_costs:valid_usage_rows"]
    assert not check.passed and check.description.startswith("1 row with negative cost_usd")
    assert _materialized(result) == set()
    assert table_count(sqlite_engine, "gpu_cost_summary") == 0


def test_the_output_check_judges_what_was_written(
    sqlite_engine: Engine, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(sqlite_engine, hourly("good", START, 24, "1", 50.0))
    assert run(sqlite_engine, instance, daily(), partition_key=KEY).success
    with sqlite_engine.begin() as conn:  # an edit of the stored aggregates, outside Heliox
        conn.execute(daily_gpu_costs.update().values(cost_usd=-3))
    # Run alone (no partition), the output check judges the last 30 days.
    monkeypatch.setattr(clock, "utc_now", lambda: END + dt.timedelta(days=2))
    output_check = AssetSelection.checks(AssetCheckKey(DAILY_COSTS_KEY, "valid_rows"))
    result = run(sqlite_engine, instance, output_check)
    check = checks_of(result)["daily_gpu_costs:valid_rows"]
    assert not check.passed and check.description.startswith("1 row with negative cost_usd")


def test_a_gpu_with_bad_rows_is_not_judged_and_the_others_are(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    # Moved: the credited GPU used to become a finding with negative savings and fail
    # idle_gpu_recommendations:valid_findings. Now it is withheld, and only the summary, whose
    # 30 days hold its rows, is blocked.
    window_start = NOW.replace(minute=0) - dt.timedelta(days=14)
    insert(sqlite_engine, hourly("credited", window_start, 336, "-1", 0.0))
    insert(sqlite_engine, hourly("idle-ok", window_start, 336, "2", 0.0))
    selection = AssetSelection.assets(IDLE_KEY, SUMMARY_KEY)
    result = run(sqlite_engine, instance, selection, partition_key="2026-01-20", config=idle_config())
    assert not result.success
    assert _materialized(result) == {"idle_gpu_recommendations"}
    withheld = checks_of(result)["idle_gpu_recommendations:valid_usage_rows"]
    assert not withheld.passed and withheld.severity == AssetCheckSeverity.WARN
    assert "1 GPU not judged" in withheld.description
    assert "'credited' (336 rows: negative cost_usd)" in withheld.description
    assert checks_of(result)["idle_gpu_recommendations:valid_findings"].passed
    evaluation = load_idle_evaluation(sqlite_engine)
    assert list(evaluation.findings["resource_id"]) == ["idle-ok"]
    assert [w.resource_id for w in evaluation.withheld] == ["credited"]

    summary = checks_of(result)["gpu_cost_summary:valid_usage_rows"]
    # Its rows up to the end of 2026-01-20 in Los Angeles (08:00 UTC on the 21st) are in the 30 days.
    assert not summary.passed and summary.description.startswith("332 rows with negative cost_usd")
    assert failure_message(result).startswith("gpu_cost_summary of 2026-01-20 was not written: 332 rows")
    assert table_count(sqlite_engine, "gpu_cost_summary") == 0


def test_edited_findings_block_the_summary(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    window_start = NOW.replace(minute=0) - dt.timedelta(days=14)
    insert(sqlite_engine, hourly("idle-ok", window_start, 336, "2", 0.0))
    assert run(sqlite_engine, instance, AssetSelection.assets(IDLE_KEY), config=idle_config()).success
    with sqlite_engine.begin() as conn:  # an edit of the stored findings, outside Heliox
        conn.execute(idle_gpu_recommendations.update().values(monthly_savings_usd=-5))
    only_check = AssetSelection.checks(AssetCheckKey(IDLE_KEY, "valid_findings"))
    check = checks_of(run(sqlite_engine, instance, only_check))["idle_gpu_recommendations:valid_findings"]
    assert not check.passed and "negative monthly_savings_usd" in check.description

    result = run(sqlite_engine, instance, AssetSelection.assets(SUMMARY_KEY), partition_key="2026-01-20")
    assert not result.success
    assert not checks_of(result)["gpu_cost_summary:valid_findings"].passed
    assert "1 row with negative monthly_savings_usd" in failure_message(result)
    assert table_count(sqlite_engine, "gpu_cost_summary") == 0


def test_the_idle_window_is_what_the_idle_check_judges(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    # Moved from gpu_usage_hourly:valid_rows of an unpartitioned run; the idle asset now withholds
    # the GPU instead of refusing the whole evaluation.
    as_of = utc(2026, 1, 21, 12)
    insert(sqlite_engine, [row("refund", as_of - dt.timedelta(days=3), "-1", 0.0)])
    result = run(sqlite_engine, instance, AssetSelection.assets(IDLE_KEY), config=idle_config())
    check = checks_of(result)["idle_gpu_recommendations:valid_usage_rows"]
    assert (
        not check.passed and "the idle window 2026-01-07 12:00 to 2026-01-21 12:00 UTC" in check.description
    )
    assert _materialized(result) == {"idle_gpu_recommendations"}
