"""``dagster.materialize`` of each cost asset against seeded SQLite and PostgreSQL, checked
against independent SQL sums; re-runs, DST partitions, empty databases and backfills."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import (
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    Definitions,
    instance_for_test,
)
from sqlalchemy import Engine, select

from heliox_orchestration.assets import (
    DAILY_COSTS_KEY,
    IDLE_KEY,
    SUMMARY_KEY,
    build_asset_defs,
)
from heliox_orchestration.assets.refresh import COSTS_REFRESH_JOB, gpu_costs_refresh_job
from heliox_orchestration.costs.summary import cost_summary, load_cost_summary
from heliox_orchestration.db.rollup_schema import daily_resource_usage_days
from heliox_orchestration.db.schema import daily_gpu_cost_days, daily_gpu_costs
from heliox_orchestration.detections.idle import (
    RAW,
    compute_idle_evaluation,
    idle_spend_report,
    idle_window,
    load_idle_spend_report,
)
from heliox_orchestration.detections.idle_rollup import window_segments
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.partitions import local_day_bounds, local_range_bounds
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration_tests.crafted import (
    db_sum_by_model_cents,
    db_sum_cents,
    engine_url,
    hourly,
    insert,
    table_count,
)
from heliox_orchestration_tests.runs import (
    END,
    FLEET,
    NOW,
    RANGE_END_TAG,
    RANGE_START_TAG,
    SETTINGS,
    checks_of,
    daily,
    idle_config,
    metadata_of,
    run,
)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def stored_day_totals(engine: Engine) -> dict[dt.date, Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(select(daily_gpu_cost_days.c.day, daily_gpu_cost_days.c.cost_usd)).all()
    return {day: cost for day, cost in rows}


def test_daily_partition_matches_database_sums(any_engine: Engine, instance: DagsterInstance) -> None:
    seed_demo(any_engine, FLEET, now=NOW)
    day = dt.date(2026, 1, 15)
    result = run(any_engine, instance, daily(), partition_key=day.isoformat())
    assert result.success
    assert all(e.passed for e in checks_of(result).values()) and len(checks_of(result)) == 4

    start, end = local_day_bounds(day, SETTINGS.timezone)
    expected = db_sum_cents(any_engine, start, end)
    assert stored_day_totals(any_engine)[day].quantize(Decimal("0.01")) == expected
    with any_engine.connect() as conn:
        rows = conn.execute(select(daily_gpu_costs).where(daily_gpu_costs.c.day == day)).all()
    assert sum(r.cost_usd for r in rows).quantize(Decimal("0.01")) == expected

    (meta,) = metadata_of(result, DAILY_COSTS_KEY)
    assert meta["dagster/row_count"] == len(rows) > 0
    assert meta["total_cost_usd"] == pytest.approx(float(expected), abs=0.005)
    assert meta["hours_in_day"] == 24 and meta["days_without_data"] == "none"
    by_model = db_sum_by_model_cents(any_engine, start, end)
    top_model = max(by_model, key=lambda m: by_model[m])
    assert meta["top_model"] == f"{top_model or 'Unattributed'}: ${by_model[top_model]:,}"
    assert "| day | provider | gpu_type | model_name | cost_usd |" in meta["preview"]


def test_partition_rerun_replaces_rows(any_engine: Engine, instance: DagsterInstance) -> None:
    seed_demo(any_engine, FLEET, now=NOW)
    key = "2026-01-15"
    assert run(any_engine, instance, daily(), partition_key=key).success
    rows, days = table_count(any_engine, "daily_gpu_costs"), table_count(any_engine, "daily_gpu_cost_days")
    start, _ = local_day_bounds(dt.date(2026, 1, 15), SETTINGS.timezone)
    insert(any_engine, hourly("late-arrival", start, 3, "100", 50.0, model_name="New model"))
    assert run(any_engine, instance, daily(), partition_key=key).success
    assert table_count(any_engine, "daily_gpu_cost_days") == days == 1
    assert table_count(any_engine, "daily_gpu_costs") == rows + 1
    assert stored_day_totals(any_engine)[dt.date(2026, 1, 15)].quantize(Decimal("0.01")) == db_sum_cents(
        any_engine, *local_day_bounds(dt.date(2026, 1, 15), SETTINGS.timezone)
    )


@pytest.mark.parametrize(("key", "hours"), [("2026-03-08", 23), ("2026-11-01", 25)])
def test_dst_partitions(sqlite_engine: Engine, instance: DagsterInstance, key: str, hours: int) -> None:
    day = dt.date.fromisoformat(key)
    start, end = local_range_bounds(day - dt.timedelta(days=1), day + dt.timedelta(days=1), SETTINGS.timezone)
    insert(sqlite_engine, hourly("gpu", start, int((end - start) / dt.timedelta(hours=1)), "1", 50.0))
    result = run(sqlite_engine, instance, daily(), partition_key=key)
    assert result.success
    (meta,) = metadata_of(result, DAILY_COSTS_KEY)
    assert meta["hours_in_day"] == hours
    assert stored_day_totals(sqlite_engine) == {day: Decimal(hours)}


def test_single_run_backfill_writes_every_day_once(any_engine: Engine, instance: DagsterInstance) -> None:
    seed_demo(any_engine, FLEET, now=NOW)
    first, last = dt.date(2026, 1, 11), END
    result = run(any_engine, instance, daily(), tags={RANGE_START_TAG: str(first), RANGE_END_TAG: str(last)})
    assert result.success
    assert len(instance.get_runs()) == 1

    keys = [str(first + dt.timedelta(days=i)) for i in range(10)]
    events = result.get_asset_materialization_events()
    assert sorted(e.partition for e in events if e.asset_key == DAILY_COSTS_KEY) == keys
    assert instance.get_materialized_partitions(DAILY_COSTS_KEY) == set(keys)

    totals = stored_day_totals(any_engine)
    assert sorted(totals) == [dt.date.fromisoformat(k) for k in keys]
    for day, total in totals.items():
        assert total.quantize(Decimal("0.01")) == db_sum_cents(
            any_engine, *local_day_bounds(day, SETTINGS.timezone)
        )
    totals_in_metadata = {
        dt.date.fromisoformat(str(e.partition)): e.materialization.metadata["total_cost_usd"].value
        for e in events
        if e.asset_key == DAILY_COSTS_KEY
    }
    assert totals_in_metadata == pytest.approx(
        {day: float(total) for day, total in totals.items()}, abs=0.005
    )


def test_range_run_of_the_refresh_job_records_each_partitions_own_figures(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    """A single run over three days, through the named refresh job: each partition's stored
    materialization carries that day's figures, and its run is of that job (the UI's "Job")."""
    seed_demo(sqlite_engine, FLEET, now=NOW)
    start, _ = local_day_bounds(dt.date(2026, 1, 18), SETTINGS.timezone)
    insert(sqlite_engine, hourly("only-on-the-18th", start, 2, "1234.5", 50.0, model_name="Solo"))
    defs = Definitions(
        assets=build_asset_defs(SETTINGS).assets,
        jobs=[gpu_costs_refresh_job],
        resources={
            "heliox_db": HelioxDatabase(url=engine_url(sqlite_engine)),
            "heliox_settings": HelioxSettings.of(SETTINGS),
        },
    )
    job = defs.resolve_job_def(COSTS_REFRESH_JOB)
    result = job.execute_in_process(
        instance=instance, tags={RANGE_START_TAG: "2026-01-17", RANGE_END_TAG: "2026-01-19"}
    )
    assert result.success

    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=DAILY_COSTS_KEY), limit=10).records
    by_day = {}
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition is not None
        by_day[dt.date.fromisoformat(materialization.partition)] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
        stored_run = instance.get_run_by_id(record.run_id)
        assert stored_run is not None and stored_run.job_name == COSTS_REFRESH_JOB
    assert sorted(by_day) == [dt.date(2026, 1, 17), dt.date(2026, 1, 18), dt.date(2026, 1, 19)]
    totals = stored_day_totals(sqlite_engine)
    for day, meta in by_day.items():
        assert meta["total_cost_usd"] == pytest.approx(float(totals[day]), abs=0.005)
        assert meta["total_cost"].startswith(f"${totals[day]:,.2f} ")
        assert meta["dagster/row_count"] == table_count_of_day(sqlite_engine, day)
        assert meta["written_by_range_run"] == "2026-01-17 to 2026-01-19 (3 days)"
        assert "days" not in meta and "daily_totals" not in meta
    assert by_day[dt.date(2026, 1, 18)]["top_model"] == "Solo: $2,469.00"
    assert "Solo" not in by_day[dt.date(2026, 1, 17)]["preview"]
    assert len({meta["total_cost_usd"] for meta in by_day.values()}) == 3


def table_count_of_day(engine: Engine, day: dt.date) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(daily_gpu_costs.c.day).where(daily_gpu_costs.c.day == day)).all())


def test_backfill_through_the_dagster_cli(sqlite_engine: Engine, tmp_path: Path) -> None:
    """The code location as `dagster dev` loads it: a range of partitions in one run."""
    seed_demo(sqlite_engine, FLEET, now=NOW)
    home = tmp_path / "dagster-home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HELIOX_DATABASE_URL": engine_url(sqlite_engine),
        "TIMEZONE": SETTINGS.timezone,
    }
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "heliox_orchestration.definitions",
    ]
    command += ["--select", "daily_gpu_costs", "--partition-range", "2026-01-14...2026-01-20"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    with DagsterInstance.from_config(str(home)) as dagster_instance:
        assert len(dagster_instance.get_runs()) == 1
        assert len(dagster_instance.get_materialized_partitions(DAILY_COSTS_KEY)) == 7
    assert sorted(stored_day_totals(sqlite_engine)) == [dt.date(2026, 1, 14 + i) for i in range(7)]


def test_idle_asset_matches_the_compute_function(any_engine: Engine, instance: DagsterInstance) -> None:
    seed_demo(any_engine, FLEET, now=NOW)
    selection = AssetSelection.assets(IDLE_KEY)
    result = run(any_engine, instance, selection, config=idle_config())
    assert result.success
    assert all(e.passed for e in checks_of(result).values())

    expected = compute_idle_evaluation(any_engine, SETTINGS, NOW)
    assert load_idle_spend_report(any_engine, ("high", "medium", "low")) == expected.report(
        ("high", "medium", "low")
    )
    assert load_idle_spend_report(any_engine) == idle_spend_report(any_engine, SETTINGS, as_of=NOW)
    (meta,) = metadata_of(result, IDLE_KEY)
    # The demo plants idle GPUs: two high-severity, two medium (one committed), one low.
    assert (meta["high_severity"], meta["medium_severity"], meta["low_severity"]) == (2, 2, 1)
    assert meta["dagster/row_count"] == 5
    assert meta["rightsizing_findings"] == 1  # its 8-GPU node
    assert "Idle GPU: H100 on AWS" in meta["preview"]


def test_summary_asset_from_materialized_assets(any_engine: Engine, instance: DagsterInstance) -> None:
    seed_demo(
        any_engine, FleetSpec(gpus=20, days=35, end_date=END, seed=3, timezone=SETTINGS.timezone), now=NOW
    )
    first = END - dt.timedelta(days=29)
    backfill = {RANGE_START_TAG: str(first), RANGE_END_TAG: str(END)}
    assert run(any_engine, instance, daily(), tags=backfill).success
    selection = AssetSelection.assets(IDLE_KEY, SUMMARY_KEY)
    result = run(any_engine, instance, selection, partition_key=str(END), config=idle_config())
    assert result.success

    stored = load_cost_summary(any_engine, END)
    assert stored == cost_summary(any_engine, END, SETTINGS, as_of=NOW)
    week = local_range_bounds(END - dt.timedelta(days=6), END, SETTINGS.timezone)
    month = local_range_bounds(first, END, SETTINGS.timezone)
    assert stored.last_7_days_cost_usd.quantize(Decimal("0.01")) == db_sum_cents(any_engine, *week)
    assert stored.last_30_days_cost_usd.quantize(Decimal("0.01")) == db_sum_cents(any_engine, *month)
    assert stored.high_severity_count == 2 and len(stored.daily_series) == 7
    (meta,) = metadata_of(result, SUMMARY_KEY)
    assert meta["days_computed_from_usage"] == "none"
    assert meta["report_date"] == str(END) and meta["high_severity_count"] == 2


def test_summary_asset_computes_days_never_materialized(
    sqlite_engine: Engine, instance: DagsterInstance
) -> None:
    seed_demo(sqlite_engine, FLEET, now=NOW)
    result = run(sqlite_engine, instance, AssetSelection.assets(SUMMARY_KEY), partition_key=str(END))
    assert result.success
    (meta,) = metadata_of(result, SUMMARY_KEY)
    assert len(meta["days_computed_from_usage"].split(", ")) == 30
    assert meta["recommendations_source"].startswith("computed now")
    summary = load_cost_summary(sqlite_engine, END)
    assert summary.last_30_days_cost_usd == cost_summary(sqlite_engine, END, SETTINGS).last_30_days_cost_usd
    assert summary.gap_days == tuple(END - dt.timedelta(days=29 - i) for i in range(10))


def test_empty_database_reports_no_usage_data(any_engine: Engine, instance: DagsterInstance) -> None:
    result = run(any_engine, instance, daily(), partition_key="2026-01-15")
    assert result.success
    (meta,) = metadata_of(result, DAILY_COSTS_KEY)
    assert meta["status"].startswith("No usage data for 2026-01-15")
    assert meta["top_model"] == "none (no usage data)" and meta["dagster/row_count"] == 0
    gap = checks_of(result)["daily_gpu_costs:no_gap_days"]
    assert not gap.passed and gap.severity.value == "WARN"

    result = run(
        any_engine,
        instance,
        AssetSelection.assets(IDLE_KEY, SUMMARY_KEY),
        partition_key="2026-01-15",
        config=idle_config(),
    )
    assert result.success
    assert metadata_of(result, IDLE_KEY)[0]["status"].startswith("No usage data")
    assert metadata_of(result, SUMMARY_KEY)[0]["status"].startswith("No usage data")
    summary = load_cost_summary(any_engine, dt.date(2026, 1, 15))
    assert summary.yesterday_cost_usd == Decimal(0) and len(summary.gap_days) == 30


def test_the_daily_refresh_keeps_the_rollup_the_idle_asset_reads(
    any_engine: Engine, instance: DagsterInstance
) -> None:
    seed_demo(any_engine, FLEET, now=NOW)
    window = idle_window(SETTINGS, NOW)
    whole, _partial = window_segments(window.start, window.end, SETTINGS.timezone)
    first = window.start.astimezone(SETTINGS.tz).date()
    backfill = {RANGE_START_TAG: str(first), RANGE_END_TAG: str(END)}
    assert run(any_engine, instance, daily(), tags=backfill).success
    result = run(any_engine, instance, AssetSelection.assets(IDLE_KEY), config=idle_config())
    assert result.success
    (meta,) = metadata_of(result, IDLE_KEY)
    # Every whole local day of the window before today came from the rollup.
    rolled = [s.day for s in whole if s.day <= END]
    assert meta["rollup_days_read"] == len(rolled) >= 12 and "days_read_raw" not in meta
    raw = compute_idle_evaluation(any_engine, SETTINGS, NOW, source=RAW)
    every = ("high", "medium", "low")
    assert load_idle_spend_report(any_engine, every) == raw.report(every)

    # A bad row refuses its day, and drops the day's rollup: that day is judged from its hours.
    bad_day = rolled[3]
    start, _end = local_day_bounds(bad_day, SETTINGS.timezone)
    insert(any_engine, hourly("bad-gpu", start, 20, "-1", 0.0))  # inside the day
    assert not run(any_engine, instance, daily(), partition_key=str(bad_day)).success
    with any_engine.connect() as conn:
        days = set(conn.execute(select(daily_resource_usage_days.c.day)).scalars())
    backfilled = {first + dt.timedelta(days=i) for i in range((END - first).days + 1)}
    assert days == backfilled - {bad_day}
    evaluation = compute_idle_evaluation(any_engine, SETTINGS, NOW)
    assert evaluation.unrolled_days == (bad_day,)
    assert [w.resource_id for w in evaluation.withheld] == ["bad-gpu"]
    assert evaluation.report(every) == compute_idle_evaluation(any_engine, SETTINGS, NOW, source=RAW).report(
        every
    )
