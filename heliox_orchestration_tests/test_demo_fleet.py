"""Schema round-trip and the demo generator's realism knobs, on real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus, SensorResult, build_sensor_context, instance_for_test
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import Engine, func, select

from heliox_orchestration import clock
from heliox_orchestration.assets.refresh import COSTS_REFRESH_JOB, IDLE_REFRESH_JOB, SUMMARY_REFRESH_JOB
from heliox_orchestration.automation.demo import FILLED, NAMED_DATABASE, demo_feed_sensor
from heliox_orchestration.automation.ingestion import RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from heliox_orchestration.automation.sensors import stale_data_sensor
from heliox_orchestration.db.engine import ensure_schema, make_engine
from heliox_orchestration.db.schema import gpu_usage_hourly, money_sum_micros
from heliox_orchestration.detections.idle import compute_idle_evaluation
from heliox_orchestration.ingest.demo_feed import extend_demo_fleet, plant_runaway_job
from heliox_orchestration.ingest.demo_fleet import FleetSpec, generate_chunks, seed_demo
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.partitions import daily_partitions
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import DEMO_WINDOW_DAYS, Settings, load_settings

NOW = dt.datetime(2026, 1, 21, 12, 30, tzinfo=dt.UTC)
SPEC = FleetSpec(gpus=30, days=20, end_date=dt.date(2026, 1, 20), seed=7)


def test_round_trip_row_count_and_exact_total(any_engine: Engine) -> None:
    report = seed_demo(any_engine, SPEC, now=NOW)
    with any_engine.connect() as conn:
        count, micros = conn.execute(
            select(func.count(), money_sum_micros(gpu_usage_hourly.c.cost_usd))
        ).one()
        first = conn.execute(select(gpu_usage_hourly).order_by(gpu_usage_hourly.c.usage_hour).limit(1)).one()
    assert count == report.rows > 0
    assert micros_to_dollars(micros) == report.total_cost_usd
    assert first.usage_hour == report.start
    assert first.usage_hour.tzinfo is not None and first.usage_hour.utcoffset() == dt.timedelta(0)
    assert isinstance(first.cost_usd, Decimal)
    assert first.gpu_count >= 1


def test_reseeding_replaces_instead_of_duplicating(any_engine: Engine) -> None:
    first = seed_demo(any_engine, SPEC, now=NOW)
    second = seed_demo(any_engine, SPEC, now=NOW)
    assert second.replaced_rows == first.rows
    with any_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(gpu_usage_hourly)).scalar_one() == first.rows


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = pd.concat(generate_chunks(SPEC, NOW))
    b = pd.concat(generate_chunks(SPEC, NOW))
    c = pd.concat(generate_chunks(FleetSpec(gpus=30, days=20, end_date=SPEC.end_date, seed=8), NOW))
    pd.testing.assert_frame_equal(a, b)
    assert not a["cost_micros"].equals(c["cost_micros"]) or not a["gpu_utilization_pct"].equals(
        c["gpu_utilization_pct"]
    )


def _idle_streak_days(rows: pd.DataFrame) -> pd.Series:
    """Trailing run of idle (<5%) hours per resource, in whole days."""

    def streak(group: pd.DataFrame) -> int:
        idle = (group.sort_values("usage_hour")["gpu_utilization_pct"] < 5).to_numpy()[::-1]
        n = 0
        for flag in idle:
            if not flag:
                break
            n += 1
        return n // 24

    return rows.groupby("resource_id").apply(streak)


def test_realism_knobs_in_a_30_day_demo() -> None:
    spec = FleetSpec(days=30, end_date=dt.date(2026, 1, 20))
    rows = pd.concat(generate_chunks(spec, NOW))
    streaks = _idle_streak_days(rows)
    assert (streaks >= 14).sum() >= 1, "a GPU idle for 14 days"
    assert ((streaks >= 7) & (streaks < 14)).sum() >= 1, "a GPU idle for 7 days"
    daily = rows.groupby(rows["usage_hour"].dt.date)["cost_micros"].sum() / 1_000_000
    assert (daily > 10_000).sum() >= 1, "a day over the default $10,000 burn threshold"
    assert (daily <= 10_000).sum() >= 1, "and days under it"
    assert rows["model_name"].isna().any(), "some unattributed usage"
    assert rows["gpu_utilization_pct"].between(0, 100).all()
    assert {"aws", "gcp", "azure"} <= set(rows["provider"])


@pytest.mark.parametrize("timezone", ["America/Los_Angeles", "Europe/London"])
def test_hours_cover_local_days_across_dst(timezone: str) -> None:
    # 2026-03-08 is 23 hours long in Los Angeles; 2026-03-29 in London.
    spec = FleetSpec(gpus=2, days=3, end_date=dt.date(2026, 3, 30), timezone=timezone)
    start, end = spec.hour_range(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert start.utcoffset() == dt.timedelta(0)
    hours = (end - start) / dt.timedelta(hours=1)
    assert hours == 72 - (1 if timezone == "Europe/London" else 0)


def test_today_stops_at_the_last_completed_hour() -> None:
    spec = FleetSpec(gpus=1, days=1, end_date=dt.date(2026, 1, 21))
    _start, end = spec.hour_range(NOW)
    assert end == dt.datetime(2026, 1, 21, 12, tzinfo=dt.UTC)


def demo_rows(engine: Engine) -> list[tuple[dt.datetime, int]]:
    """(hour, rows) of the demo fleet, oldest first."""
    hour = gpu_usage_hourly.c.usage_hour
    with engine.connect() as conn:
        rows = conn.execute(select(hour, func.count()).group_by(hour).order_by(hour)).all()
    return [(h, n) for h, n in rows]


def test_demo_feed_appends_up_to_the_last_completed_hour_once(any_engine: Engine) -> None:
    spec = FleetSpec(days=3, timezone="America/Los_Angeles")
    seeded_at = dt.datetime(2026, 1, 21, 12, 30, tzinfo=dt.UTC)
    seed_demo(any_engine, spec, now=seeded_at)
    before = demo_rows(any_engine)
    assert before[-1][0] == dt.datetime(2026, 1, 21, 11, tzinfo=dt.UTC)

    now = seeded_at + dt.timedelta(hours=5, minutes=10)  # 17:40: hours 12:00-16:00 are due
    fed = extend_demo_fleet(any_engine, spec.timezone, now)
    after = demo_rows(any_engine)
    new_hours = [dt.datetime(2026, 1, 21, 12 + i, tzinfo=dt.UTC) for i in range(5)]
    assert [h for h, _ in after] == [h for h, _ in before] + new_hours
    assert fed.first_hour == new_hours[0] and fed.last_hour == new_hours[-1]
    # Every GPU of the fleet's last seeded hour reports each new hour (the idle ones too).
    assert all(n == before[-1][1] for _, n in after[-5:]) and fed.rows == 5 * before[-1][1]

    again = extend_demo_fleet(any_engine, spec.timezone, now + dt.timedelta(minutes=15))
    assert again.rows == 0 and demo_rows(any_engine) == after
    assert extend_demo_fleet(any_engine, spec.timezone, now + dt.timedelta(hours=1)).rows == before[-1][1]


def test_demo_feed_on_an_empty_database_writes_nothing(sqlite_engine: Engine) -> None:
    assert extend_demo_fleet(sqlite_engine, "UTC", NOW).rows == 0
    assert demo_rows(sqlite_engine) == []


def test_runaway_job_crosses_the_threshold_once(sqlite_engine: Engine) -> None:
    now = dt.datetime(2026, 1, 21, 15, 20, tzinfo=dt.UTC)
    gpus = plant_runaway_job(sqlite_engine, "UTC", Decimal("10000"), now)
    assert gpus == 896  # ceil(11,000 / 12.29)
    with sqlite_engine.connect() as conn:
        hour, micros = conn.execute(
            select(func.max(gpu_usage_hourly.c.usage_hour), money_sum_micros(gpu_usage_hourly.c.cost_usd))
        ).one()
    assert hour == dt.datetime(2026, 1, 21, 14, tzinfo=dt.UTC) and micros_to_dollars(micros) > 10000
    assert plant_runaway_job(sqlite_engine, "UTC", Decimal("10000"), now + dt.timedelta(hours=2)) == 0
    # In the first hour of the local day there is no completed hour of today to put it in.
    assert (
        plant_runaway_job(
            sqlite_engine, "UTC", Decimal("10000"), dt.datetime(2026, 1, 22, 0, 5, tzinfo=dt.UTC)
        )
        == 0
    )


def sensor_result(
    database: HelioxDatabase, cursor: str | None = None, instance: DagsterInstance | None = None
) -> SensorResult:
    with nullcontext(instance) if instance else instance_for_test() as test_instance:
        context = build_sensor_context(
            instance=test_instance,
            cursor=cursor,
            resources={"heliox_db": database, "heliox_settings": HelioxSettings.of(load_settings())},
        )
        result = demo_feed_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_demo_feed_sensor_never_writes_to_a_named_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/named.db"
    named = make_engine(url)
    ensure_schema(named)
    seed_demo(named, FleetSpec(days=2), now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=6))
    before = demo_rows(named)
    result = sensor_result(HelioxDatabase(url=url))
    assert result.skip_reason is not None and result.skip_reason.skip_message == NAMED_DATABASE
    assert not result.run_requests and demo_rows(named) == before


def test_demo_feed_sensor_fills_the_window_then_idle_then_summary_once() -> None:
    """Each first-start step waits for the previous step's run to end: the idle findings read the
    filled window's rollup, and the summary (which refreshes the idle findings too) never races them."""
    settings = load_settings()
    today = settings.today()
    assert settings.start_date == today - dt.timedelta(days=DEMO_WINDOW_DAYS - 1)
    with instance_for_test() as instance:
        first = sensor_result(HelioxDatabase(), instance=instance)
        (window,) = first.run_requests
        assert window.job_name == COSTS_REFRESH_JOB
        assert (window.tags[RANGE_START_TAG], window.tags[RANGE_END_TAG]) == (
            str(settings.start_date),
            str(today),
        )
        engine = HelioxDatabase().get_engine()
        newest = demo_rows(engine)[-1][0]
        assert newest == dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(
            hours=1
        )

        cursor = first.cursor
        for job, then in ((COSTS_REFRESH_JOB, IDLE_REFRESH_JOB), (IDLE_REFRESH_JOB, SUMMARY_REFRESH_JOB)):
            run = create_run_for_test(
                instance, job_name=job, status=DagsterRunStatus.STARTED, tags={TRIGGER_TAG: "demo-window"}
            )
            held = sensor_result(HelioxDatabase(), cursor=cursor, instance=instance)
            assert not held.run_requests and held.cursor == cursor
            assert (
                held.skip_reason is not None
                and f"Waiting for the demo's {job}" in held.skip_reason.skip_message
            )
            instance.report_run_failed(run)  # however the step ended, the next one follows
            released = sensor_result(HelioxDatabase(), cursor=cursor, instance=instance)
            (step,) = released.run_requests
            assert step.job_name == then
            cursor = released.cursor
        assert step.partition_key == str(settings.yesterday())
        assert cursor == FILLED

        later = sensor_result(HelioxDatabase(), cursor=cursor, instance=instance)
        assert not later.run_requests and later.skip_reason is not None
        assert later.skip_reason.skip_message.startswith("Demo usage is current")


def test_partitions_start_with_the_demo_window_only_on_the_embedded_database() -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert load_settings({}).start_date == today - dt.timedelta(days=DEMO_WINDOW_DAYS - 1)
    assert load_settings({"HELIOX_DATABASE_URL": "sqlite:///x.db"}).start_date == dt.date(2025, 1, 1)
    assert load_settings({"HELIOX_START_DATE": "2025-06-01"}).start_date == dt.date(2025, 6, 1)
    partitions = daily_partitions(load_settings({}))
    assert partitions.get_first_partition_key() == str(today - dt.timedelta(days=DEMO_WINDOW_DAYS - 1))


def test_the_stale_data_sensor_never_alerts_on_the_live_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster restarted the next day: the stale check brings the demo up to date before it looks."""
    database = HelioxDatabase()
    engine = database.get_engine()  # seeds the demo up to the last completed hour
    later = dt.datetime.now(dt.UTC).replace(hour=12, minute=30, second=0, microsecond=0) + dt.timedelta(
        days=1
    )
    monkeypatch.setattr(clock, "utc_now", lambda: later)
    with instance_for_test() as instance:
        context = build_sensor_context(
            instance=instance,
            resources={"heliox_db": database, "heliox_settings": HelioxSettings.of(load_settings())},
        )
        result = stale_data_sensor(context)
    assert isinstance(result, SensorResult) and not result.run_requests
    assert result.skip_reason is not None and result.skip_reason.skip_message.startswith(
        "Fresh: newest usage"
    )
    assert demo_rows(engine)[-1][0] == later.replace(minute=0) - dt.timedelta(hours=1)


def test_committed_capacity_and_an_oversized_node(any_engine: Engine) -> None:
    seed_demo(any_engine, FleetSpec(gpus=20, days=20, end_date=dt.date(2026, 1, 20), seed=3), now=NOW)
    evaluation = compute_idle_evaluation(any_engine, Settings(), NOW)
    committed = [f for f in evaluation.to_findings() if f.action == "reallocate"]
    assert [(f.resource_id, f.severity, f.monthly_savings_usd) for f in committed] == [
        ("demo-aws-h100-00004", "medium", Decimal(0))
    ]
    (node,) = evaluation.to_rightsizing()
    assert (node.resource_id, node.gpu_count, node.recommended_gpu_count) == ("demo-aws-a100-00005", 8, 2)
    assert node.monthly_savings_usd > 0
    with any_engine.connect() as conn:
        categories = dict(
            conn.execute(
                select(gpu_usage_hourly.c.pricing_category, func.count()).group_by(
                    gpu_usage_hourly.c.pricing_category
                )
            ).all()
        )
    assert set(categories) == {"Committed", "Dynamic", "Standard"}
