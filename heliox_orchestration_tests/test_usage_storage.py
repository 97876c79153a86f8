"""The lean usage table: month partitions made by the writers (PostgreSQL), and
HELIOX_RETENTION_DAYS applied by usage_maintenance_job (partitions dropped / rows deleted)."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, text

from heliox_orchestration.assets.maintenance import usage_maintenance_job
from heliox_orchestration.db.bulk import insert_usage_frame
from heliox_orchestration.db.retention import retention_cutoff, usage_upkeep
from heliox_orchestration.db.schema import daily_gpu_cost_days, gpu_usage_hourly
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions, month_partitions
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import SettingsError, load_settings

UTC = dt.UTC
# From 2026-01-30 through 2026-03-02 23:00 UTC, two GPUs: rows in January, February and March.
HOURS = pd.date_range("2026-01-30", "2026-03-02 23:00", freq="h", tz="UTC")
NOW = dt.datetime(2026, 4, 9, 12, tzinfo=UTC)


def _frame(hours: pd.DatetimeIndex) -> pd.DataFrame:
    rows = len(hours)
    return pd.DataFrame(
        {
            "usage_hour": list(hours) * 2,
            "provider": "aws",
            "region": "us-east-1",
            "resource_id": ["gpu-a"] * rows + ["gpu-b"] * rows,
            "gpu_type": "H100",
            "gpu_count": 8,
            "model_name": "llama",
            "team": "research",
            "cost_micros": 12_345_678,
            "gpu_utilization_pct": 50.0,
        }
    )


def _count(engine: Engine, where: Any = None) -> int:
    query = select(func.count()).select_from(gpu_usage_hourly)
    with engine.connect() as conn:
        return conn.execute(query if where is None else query.where(where)).scalar_one()


def _partitions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [p.name for p in month_partitions(conn)]


def test_writers_create_the_month_partitions_and_adopt_rows_of_the_default_partition(
    postgres_engine: Engine,
) -> None:
    stray = {
        "usage_hour": dt.datetime(2026, 2, 10, tzinfo=UTC),
        "provider": "aws",
        "region": None,
        "resource_id": "gpu-stray",
        "gpu_type": "A100",
        "gpu_count": 1,
        "model_name": None,
        "team": None,
        "cost_usd": Decimal("1.5"),
        "gpu_utilization_pct": None,
    }
    with postgres_engine.begin() as conn:
        conn.execute(gpu_usage_hourly.insert(), [stray])  # no partition of February yet
        assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_default")).scalar() == 1
        insert_usage_frame(conn, _frame(HOURS))
    created = _partitions(postgres_engine)
    assert {"gpu_usage_hourly_2026_01", "gpu_usage_hourly_2026_02", "gpu_usage_hourly_2026_03"} <= set(
        created
    )
    with postgres_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_default")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_2026_02")).scalar() == 2 * 28 * 24 + 1
    assert _count(postgres_engine) == 2 * len(HOURS) + 1
    with postgres_engine.connect() as conn:  # a day is read through the BRIN index
        plan = conn.execute(
            text(
                "EXPLAIN SELECT sum(cost_usd) FROM gpu_usage_hourly "
                "WHERE usage_hour >= '2026-02-10' AND usage_hour < '2026-02-11'"
            )
        ).scalars()
        plan_text = "\n".join(plan)
    assert "gpu_usage_hourly_2026_01" not in plan_text and "gpu_usage_hourly_2026_03" not in plan_text


def test_retention_is_off_by_default_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings({}).retention_days is None
    assert retention_cutoff(load_settings({}), NOW) is None
    assert load_settings({"HELIOX_RETENTION_DAYS": "40"}).retention_days == 40
    with pytest.raises(SettingsError, match=r"HELIOX_RETENTION_DAYS=10 is out of range; allowed: 32-36500"):
        load_settings({"HELIOX_RETENTION_DAYS": "10"})
    with pytest.raises(SettingsError, match=r"HELIOX_RETENTION_DAYS=40 would drop .*IDLE_LOOKBACK_DAYS=60"):
        load_settings({"HELIOX_RETENTION_DAYS": "40", "IDLE_LOOKBACK_DAYS": "60"})


def test_retention_keeps_every_row_of_the_window_and_the_derived_tables(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        insert_usage_frame(conn, _frame(HOURS))
        conn.execute(
            daily_gpu_cost_days.insert(),
            [
                {
                    "day": dt.date(2026, 1, 30),
                    "timezone": "America/Los_Angeles",
                    "start_utc": dt.datetime(2026, 1, 30, 8, tzinfo=UTC),
                    "end_utc": dt.datetime(2026, 1, 31, 8, tzinfo=UTC),
                    "hours_in_day": 24,
                    "has_data": True,
                    "cost_usd": Decimal("592.59"),
                    "gpu_hours": 384,
                    "usage_rows": 48,
                    "computed_at": NOW,
                }
            ],
        )
    keep_all = usage_upkeep(any_engine, load_settings({}), NOW)
    assert keep_all.removed_rows == 0 and _count(any_engine) == 2 * len(HOURS)

    # 2026-04-09 in Los Angeles minus 40 days: the window starts 2026-02-28 00:00 PST = 08:00 UTC.
    settings = load_settings({"HELIOX_RETENTION_DAYS": "40", "TIMEZONE": "America/Los_Angeles"})
    cutoff = dt.datetime(2026, 2, 28, 8, tzinfo=UTC)
    assert retention_cutoff(settings, NOW) == cutoff
    in_window = _count(any_engine, gpu_usage_hourly.c.usage_hour >= cutoff)
    result = usage_upkeep(any_engine, settings, NOW)

    with any_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(daily_gpu_cost_days)).scalar() == 1
    if any_engine.dialect.name == "postgresql":
        # January ends before the window: dropped whole. February holds hours of the window: kept.
        assert result.dropped == [("gpu_usage_hourly_2026_01", 2 * 2 * 24)]
        assert result.deleted_rows == 0
        assert "gpu_usage_hourly_2026_02" in _partitions(any_engine)
        assert {"gpu_usage_hourly_2026_04", "gpu_usage_hourly_2026_05"} <= set(keep_all.created)  # ahead
        assert _count(any_engine) == 2 * len(HOURS) - 2 * 2 * 24
        assert _count(any_engine, gpu_usage_hourly.c.usage_hour < cutoff) > 0  # a partial month stays
    else:
        assert result.dropped == [] and _count(any_engine) == in_window
        assert result.deleted_rows == 2 * len(HOURS) - in_window
    assert _count(any_engine, gpu_usage_hourly.c.usage_hour >= cutoff) == in_window
    assert f"{result.removed_rows:,} removed" in result.describe()
    assert usage_upkeep(any_engine, settings, NOW).removed_rows == 0  # nothing more to remove


def test_usage_maintenance_job_logs_what_it_removed(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as conn:
        insert_usage_frame(conn, _frame(HOURS))
    url = sqlite_engine.url.render_as_string(hide_password=False)
    settings = load_settings({"HELIOX_RETENTION_DAYS": "365"})
    result = usage_maintenance_job.execute_in_process(
        resources={"heliox_db": HelioxDatabase(url=url), "heliox_settings": HelioxSettings.of(settings)}
    )
    assert result.success
    (materialization,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata  # type: ignore[union-attr]
    assert metadata["retention_days"].value == 365
    assert metadata["rows_removed"].value == 0
    assert _count(sqlite_engine) == 2 * len(HOURS)


def test_two_writers_creating_the_same_month_take_turns(postgres_engine: Engine) -> None:
    month = dt.datetime(2027, 5, 10, tzinfo=UTC)
    barrier = threading.Barrier(2)
    created: list[list[str]] = []

    def writer() -> None:
        with postgres_engine.begin() as conn:
            barrier.wait()
            created.append(ensure_usage_partitions(conn, month, month))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [[], ["gpu_usage_hourly_2027_05"]]
    assert "gpu_usage_hourly_2027_05" in _partitions(postgres_engine)


def test_a_writer_creating_a_month_does_not_lock_readers_out_for_its_whole_transaction(
    postgres_engine: Engine,
) -> None:
    hours = pd.date_range("2027-08-01", periods=3, freq="h", tz="UTC")
    with postgres_engine.begin() as writer:
        insert_usage_frame(writer, _frame(hours))  # creates August, then writes (not yet committed)
        with postgres_engine.connect() as reader:
            reader.execute(text("SET lock_timeout = '2s'"))  # a lock wait fails fast instead of hanging
            assert reader.execute(text("SELECT count(*) FROM gpu_usage_hourly")).scalar() == 0
            assert "gpu_usage_hourly_2027_08" in [p.name for p in month_partitions(reader)]
    assert _count(postgres_engine) == 6
