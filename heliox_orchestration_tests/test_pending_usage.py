"""Hours that have not started never enter ``gpu_usage_hourly``: a FOCUS charge for today is held
in ``gpu_usage_pending`` and released hour by hour (issue 12, A1), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetSelection, DagsterInstance, instance_for_test
from sqlalchemy import Engine, Table, func, select, text

from heliox_orchestration import clock
from heliox_orchestration.assets import IDLE_KEY
from heliox_orchestration.cli import cli
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_pending, money_sum_micros
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.report import format_report
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import row
from heliox_orchestration_tests.runs import daily, run
from heliox_orchestration_tests.test_focus_import import _row, write_focus

NOW = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.UTC)
TODAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
ND = "/subscriptions/0000/resourcegroups/ml/providers/microsoft.compute/virtualmachines/nd-h100-01"
HOUR = dt.timedelta(hours=1)


def azure_daily(day: dt.datetime, cost: str) -> dict[str, str]:
    """One Azure FOCUS row: a VM's charge for a whole UTC day."""
    return _row(
        day,
        24,
        EffectiveCost=cost,
        ProviderName="Microsoft",
        RegionId="eastus",
        ResourceId=ND,
        x_SkuMeterName="ND96isr H100 v5",
    )


def daily_file(tmp_path: Path, today_cost: str = "2400.000024", name: str = "azure.csv") -> Path:
    return write_focus(
        tmp_path / name, [azure_daily(TODAY - dt.timedelta(days=1), "2400"), azure_daily(TODAY, today_cost)]
    )


def hours_of(engine: Engine, table: Table) -> dict[dt.datetime, Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.usage_hour, table.c.cost_usd).order_by(table.c.usage_hour)).all()
    return {hour: cost for hour, cost in rows}


def total(engine: Engine, table: Table) -> Decimal:
    with engine.connect() as conn:
        micros = conn.execute(select(money_sum_micros(table.c.cost_usd))).scalar_one()
    return micros_to_dollars(micros)


def test_a_charge_for_today_is_held_until_its_hours_start(any_engine: Engine, tmp_path: Path) -> None:
    report = import_focus(any_engine, daily_file(tmp_path), now=NOW)

    stored, held = hours_of(any_engine, gpu_usage_hourly), hours_of(any_engine, gpu_usage_pending)
    assert max(stored) == TODAY + 9 * HOUR <= NOW  # 09:00 has started at 09:30; 10:00 has not
    assert len(stored) == 24 + 10 and len(held) == 14
    assert min(held) == TODAY + 10 * HOUR and max(held) == TODAY + 23 * HOUR
    both = total(any_engine, gpu_usage_hourly) + total(any_engine, gpu_usage_pending)
    assert both == Decimal("4800.000024")
    assert (report.resource_hours, report.pending_hours) == (48, 14)
    assert report.pending_until == TODAY + 23 * HOUR
    assert "  held until their hours start: 14 resource-hours up to 2026-11-30 23:00 UTC" in "\n".join(
        format_report(report)
    )

    # Released hour by hour, each hour once however often the release runs.
    assert release_due_usage(any_engine, NOW + 3 * HOUR) == 3
    assert release_due_usage(any_engine, NOW + 3 * HOUR) == 0
    assert max(hours_of(any_engine, gpu_usage_hourly)) == TODAY + 12 * HOUR
    assert len(hours_of(any_engine, gpu_usage_pending)) == 11
    with any_engine.connect() as conn:
        assert release_due_usage(conn, TODAY + 24 * HOUR) == 11  # a Connection outside a transaction
    assert hours_of(any_engine, gpu_usage_pending) == {}
    assert len(hours_of(any_engine, gpu_usage_hourly)) == 48
    assert total(any_engine, gpu_usage_hourly) == Decimal("4800.000024")  # to the micro-dollar


def test_reimporting_replaces_held_hours_too(any_engine: Engine, tmp_path: Path) -> None:
    import_focus(any_engine, daily_file(tmp_path), now=NOW)
    # Azure updates today's charge as the day goes on; imported again two hours later:
    later = import_focus(any_engine, daily_file(tmp_path, "2640", "azure-v2.csv"), now=NOW + 2 * HOUR)

    stored, held = hours_of(any_engine, gpu_usage_hourly), hours_of(any_engine, gpu_usage_pending)
    assert later.replaced_rows == 48  # 34 hourly + 14 held rows of the same resource-hours
    assert later.pending_hours == len(held) == 12 and min(held) == TODAY + 12 * HOUR
    assert len(stored) == 36 and not set(stored) & set(held)
    assert stored[TODAY + 10 * HOUR] == Decimal("110")  # held before, started since: now hourly
    assert set(held.values()) == {Decimal("110")}
    assert total(any_engine, gpu_usage_hourly) + total(any_engine, gpu_usage_pending) == Decimal("5040")


def test_release_replaces_a_stored_row_of_the_same_hour(any_engine: Engine, tmp_path: Path) -> None:
    import_focus(any_engine, daily_file(tmp_path), now=NOW)
    hour = TODAY + 15 * HOUR
    with any_engine.begin() as conn:
        conn.execute(gpu_usage_hourly.insert(), [row(ND, hour, "1.00", None, provider="azure")])
    assert release_due_usage(any_engine, hour) == 6  # 10:00 to 15:00
    stored = hours_of(any_engine, gpu_usage_hourly)
    assert stored[hour] == Decimal("100.000001")  # the held row, not added to the stored one
    assert len(stored) == 24 + 16


def test_an_import_releases_what_earlier_imports_held(sqlite_engine: Engine, tmp_path: Path) -> None:
    import_focus(sqlite_engine, daily_file(tmp_path), now=NOW)
    other = write_focus(
        tmp_path / "aws.csv",
        [
            _row(
                NOW - 2 * HOUR,
                EffectiveCost="98.32",
                ProviderName="AWS",
                ResourceId="i-0p5",
                x_UsageType="BoxUsage:p5.48xlarge",
            )
        ],
    )
    report = import_focus(sqlite_engine, other, now=NOW + 4 * HOUR)
    assert report.released_rows == 4
    assert "Released 4 resource-hours held by earlier imports" in "\n".join(format_report(report))
    assert len(hours_of(sqlite_engine, gpu_usage_pending)) == 10


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def test_the_cost_assets_release_started_hours_before_computing(
    sqlite_engine: Engine, tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_focus(sqlite_engine, daily_file(tmp_path), now=NOW)
    settings = Settings(timezone="UTC")

    monkeypatch.setattr(clock, "utc_now", lambda: NOW + 2 * HOUR)
    result = run(sqlite_engine, instance, daily(), partition_key="2026-11-30", settings=settings)
    assert result.success
    assert len(hours_of(sqlite_engine, gpu_usage_pending)) == 12
    with sqlite_engine.connect() as conn:
        day_cost = conn.execute(text("SELECT cost_usd FROM daily_gpu_cost_days")).scalar_one()
    assert Decimal(str(day_cost)) == Decimal("1200.000012")  # 12 of today's 24 hours, to the micro

    monkeypatch.setattr(clock, "utc_now", lambda: NOW + 5 * HOUR)
    config = {"idle_gpu_recommendations": {"as_of": (NOW + 5 * HOUR).isoformat()}}
    result = run(sqlite_engine, instance, AssetSelection.assets(IDLE_KEY), config=config, settings=settings)
    assert result.success
    assert len(hours_of(sqlite_engine, gpu_usage_pending)) == 9


def test_doctor_counts_the_held_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"sqlite:///{tmp_path}/doctor.db")
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "gpu_usage_pending" in result.output


# --- two releases at once (PostgreSQL) -----------------------------------------------------------


def _hold(engine: Engine, tmp_path: Path) -> int:
    # Half an hour before today's charge starts: within the import's tolerance for clock skew.
    import_focus(engine, daily_file(tmp_path), now=TODAY - HOUR / 2)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(gpu_usage_pending)).scalar_one())


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


@pytest.mark.postgres
def test_a_second_release_waits_for_the_first_and_moves_nothing(
    postgres_engine: Engine, tmp_path: Path
) -> None:
    held = _hold(postgres_engine, tmp_path)
    assert held == 24  # all of today
    results: list[int | BaseException] = []

    def second_release() -> None:
        try:
            results.append(release_due_usage(postgres_engine, NOW))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    with postgres_engine.connect() as first:
        transaction = first.begin()
        assert release_due_usage(first, NOW) == 10  # in an open transaction: not committed
        second = threading.Thread(target=second_release)
        second.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(postgres_engine):
            assert time.monotonic() < deadline, "the second release never waited for the first"
            time.sleep(0.05)
        assert second.is_alive()
        transaction.commit()
    second.join(timeout=30)
    assert results == [0]
    assert len(hours_of(postgres_engine, gpu_usage_pending)) == 14
    assert len(hours_of(postgres_engine, gpu_usage_hourly)) == 48 - 14


@pytest.mark.postgres
def test_racing_releases_move_every_hour_exactly_once(postgres_engine: Engine, tmp_path: Path) -> None:
    _hold(postgres_engine, tmp_path)
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def release() -> None:
        barrier.wait()
        try:
            results.append(release_due_usage(postgres_engine, TODAY + 24 * HOUR))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(results) == [0, 24]
    assert hours_of(postgres_engine, gpu_usage_pending) == {}
    assert total(postgres_engine, gpu_usage_hourly) == Decimal("4800.000024")
