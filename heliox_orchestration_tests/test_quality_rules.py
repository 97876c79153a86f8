"""Values no query can trust, each on the database where it happens: SQLite's Infinity, text in a
numeric column and an hour stored in another text form; PostgreSQL's NaN. New databases refuse
them; tables created before the constraints keep them, and the rules catch them there before any
query computes with them. `heliox preview` says where the job would be blocked."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from dagster import AssetSelection, DagsterInstance, instance_for_test
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.alerts.catalog import preview_message
from heliox_orchestration.assets import DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY
from heliox_orchestration.cli import cli
from heliox_orchestration.costs.quality import usage_rule_report
from heliox_orchestration.detections.idle import load_idle_evaluation
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import engine_url, hourly, insert, row, table_count, utc
from heliox_orchestration_tests.runs import SETTINGS, checks_of, daily, idle_config, run

DAY = dt.date(2026, 1, 15)
KEY = DAY.isoformat()
START, END = local_day_bounds(DAY, SETTINGS.timezone)
COLUMNS = (
    "usage_hour",
    "provider",
    "resource_id",
    "gpu_type",
    "gpu_count",
    "cost_usd",
    "gpu_utilization_pct",
)
PG_NAN_CONSTRAINTS = ("ck_gpu_usage_hourly_cost_usd_not_nan", "ck_gpu_usage_hourly_utilization_not_nan")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def raw_row(resource_id: str, usage_hour: Any, cost: Any, util: Any = 50.0) -> tuple[Any, ...]:
    return (usage_hour, "aws", resource_id, "H100", 1, cost, util)


def sqlite_hour(instant: dt.datetime) -> str:
    return f"{instant:%Y-%m-%d %H:%M:%S}.000000"


def write_into_an_old_table(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    """What another tool writes into a table created before the CHECK constraints (Heliox never
    alters existing tables): raw SQL, the constraints not in force."""
    placeholders = ", ".join("?" * len(COLUMNS))
    sql = f"INSERT INTO gpu_usage_hourly ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    if engine.dialect.name == "sqlite":
        conn = sqlite3.connect(str(engine.url.database))
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.executemany(sql, rows)
        conn.commit()
        conn.close()
        return
    with engine.begin() as conn:
        for name in PG_NAN_CONSTRAINTS:
            conn.exec_driver_sql(f"ALTER TABLE gpu_usage_rows DROP CONSTRAINT {name}")
        conn.exec_driver_sql(sql.replace("?", "%s"), rows)


def refusal(result: Any) -> str:
    (failure,) = result.get_step_failure_events()
    return str(failure.step_failure_data.user_failure_data.description)


def test_a_new_sqlite_database_refuses_values_no_query_can_sum(sqlite_engine: Engine) -> None:
    hour = sqlite_hour(START)
    for values in (
        raw_row("text-cost", hour, "12abc"),
        raw_row("inf-cost", hour, float("inf")),
        raw_row("text-util", hour, 1.5, "n/a"),
        raw_row("t-form", "2026-01-15T08:00:00+00:00", 1.5),
        raw_row("half-hour", sqlite_hour(START).replace(":00:00.", ":30:00."), 1.5),
    ):
        with pytest.raises(IntegrityError, match="CHECK constraint failed"), sqlite_engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO gpu_usage_hourly ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", values
            )
    insert(sqlite_engine, [row("fine", START, "1.50")])  # what Heliox and its bulk writers write
    assert table_count(sqlite_engine, "gpu_usage_hourly") == 1


def test_a_new_postgres_database_refuses_nan(postgres_engine: Engine) -> None:
    for cost, util in (("NaN", 50.0), ("1.5", "NaN")):
        with pytest.raises(IntegrityError, match="not_nan"), postgres_engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO gpu_usage_hourly ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                raw_row("nan", START, cost, util),
            )


@pytest.mark.parametrize(
    ("bad", "problem", "example"),
    [
        # Infinity summed to $9.2 trillion through the integer micro-dollar cast.
        (
            raw_row("inf", sqlite_hour(START + dt.timedelta(hours=5)), float("inf")),
            "1 row with cost_usd above $10,000.00 an hour",
            "'inf' at 2026-01-15 13:00 UTC: gpu_count=1, cost_usd=inf",
        ),
        # '12abc' counted as $12.
        (
            raw_row("typo", sqlite_hour(START + dt.timedelta(hours=5)), "12abc"),
            "1 row with cost_usd not a number",
            "'typo' at 2026-01-15 13:00 UTC: cost_usd='12abc'",
        ),
        (
            raw_row("sensor", sqlite_hour(START + dt.timedelta(hours=5)), 1.0, "n/a"),
            "1 row with gpu_utilization_pct not a number",
            "gpu_utilization_pct='n/a'",
        ),
        # The same resource-hour in another text form escaped the primary key: counted twice.
        (
            raw_row("good", "2026-01-15T13:00:00+00:00", 1.0),
            "1 row with usage_hour not the start of a UTC hour",
            "'good' at '2026-01-15T13:00:00+00:00': cost_usd=1",
        ),
    ],
)
def test_sqlite_values_no_query_can_trust_block_their_day(
    sqlite_engine: Engine, instance: DagsterInstance, bad: tuple[Any, ...], problem: str, example: str
) -> None:
    insert(sqlite_engine, hourly("good", START, 24, "1", 50.0))
    write_into_an_old_table(sqlite_engine, [bad])
    result = run(sqlite_engine, instance, daily(), partition_key=KEY)
    assert not result.success and table_count(sqlite_engine, "daily_gpu_costs") == 0
    assert checks_of(result)["daily_gpu_costs:valid_usage_rows"].description.startswith(problem)
    message = refusal(result)
    assert message.startswith(f"daily_gpu_costs {KEY} was not written: {problem}") and example in message


def test_sqlite_infinity_never_reaches_the_summary(sqlite_engine: Engine, instance: DagsterInstance) -> None:
    insert(sqlite_engine, hourly("good", START - dt.timedelta(days=5), 24 * 6, "1", 50.0))
    write_into_an_old_table(
        sqlite_engine, [raw_row("inf", sqlite_hour(START - dt.timedelta(days=3)), float("inf"))]
    )
    selection = AssetSelection.assets(DAILY_COSTS_KEY, IDLE_KEY, SUMMARY_KEY)
    result = run(sqlite_engine, instance, selection, partition_key=KEY, config=idle_config())
    assert not result.success
    assert refusal(result).startswith(
        f"gpu_cost_summary of {KEY} was not written: 1 row with cost_usd above $10,000.00 an hour"
    )
    assert table_count(sqlite_engine, "gpu_cost_summary") == 0
    # The idle evaluation withheld the GPU instead of judging it on an infinite cost.
    assert [w.resource_id for w in load_idle_evaluation(sqlite_engine).withheld] == ["inf"]


@pytest.mark.postgres
def test_postgres_nan_gets_one_clear_line_everywhere(
    postgres_engine: Engine, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(postgres_engine, hourly("good", START, 24, "1", 50.0))
    at = utc(2026, 1, 15, 13)
    half_past = at + dt.timedelta(minutes=30)
    bad = [
        raw_row("nan-cost", at, "NaN"),
        raw_row("nan-util", at, "2", "NaN"),
        raw_row("half-past", half_past, "2"),
    ]
    write_into_an_old_table(postgres_engine, bad)

    refused = run(postgres_engine, instance, daily(), partition_key=KEY)
    assert not refused.success
    message = refusal(refused)
    assert message.startswith(
        f"daily_gpu_costs {KEY} was not written: 1 row with cost_usd not a number, "
        "1 row with gpu_utilization_pct not a number, 1 row with usage_hour not the start of a UTC hour"
    )
    assert "'nan-cost' at 2026-01-15 13:00 UTC: cost_usd=NaN" in message and "bigint" not in message

    idle = run(postgres_engine, instance, AssetSelection.assets(IDLE_KEY), config=idle_config())
    assert idle.success
    withheld = [w.resource_id for w in load_idle_evaluation(postgres_engine).withheld]
    assert withheld == ["half-past", "nan-cost", "nan-util"]

    monkeypatch.setenv("TIMEZONE", SETTINGS.timezone)
    command = ["preview", "burn-rate", "--date", KEY, "--database-url", engine_url(postgres_engine)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "High Burn Rate" not in result.output
    assert result.output.startswith(
        "Preview: the job would be blocked: daily_gpu_costs 2026-01-15 would not be written: "
        "1 row with cost_usd not a number"
    )
    assert len(result.output.strip().splitlines()) == 1


def test_preview_says_where_the_job_would_be_blocked(sqlite_engine: Engine) -> None:
    settings = Settings()
    now = utc(2026, 1, 9, 12)
    insert(sqlite_engine, hourly("idle-ok", now - dt.timedelta(days=14), 14 * 24, "2", 0.5))
    insert(sqlite_engine, [row("refund", utc(2026, 1, 8, 5), "-40", 0.5)])

    summary = preview_message("daily-summary", sqlite_engine, settings, dt.date(2026, 1, 9), now=now)
    assert summary.blocked and not summary.would_send and summary.message is None
    assert summary.note.startswith(
        "the job would be blocked: gpu_cost_summary of 2026-01-08 would not be written: "
        "1 row with negative cost_usd in the local days 2025-12-10 to 2026-01-08 (UTC), "
        "e.g. 'refund' at 2026-01-08 05:00 UTC: cost_usd=-40"
    )
    assert summary.note.endswith("then preview again.")
    assert preview_message("burn-rate", sqlite_engine, settings, dt.date(2026, 1, 8), now=now).blocked
    today = preview_message("burn-rate", sqlite_engine, settings, dt.date(2026, 1, 9), now=now)
    assert not today.blocked and today.message is not None  # the bad row is not in today's numbers

    idle = preview_message("idle-spend", sqlite_engine, settings, dt.date(2026, 1, 9), now=now)
    assert idle.would_send and "1 GPU not judged" in idle.note and idle.message is not None
    assert (
        "⚠️ 1 GPU not judged: its usage rows fail checks (negative cost_usd)" in idle.message.to_plain_text()
    )

    url = engine_url(sqlite_engine)
    cli_result = CliRunner().invoke(
        cli, ["preview", "daily-summary", "--database-url", url, "--date", "2026-01-09"]
    )
    assert cli_result.exit_code == 0
    assert cli_result.stdout.startswith("Preview: the job would be blocked: gpu_cost_summary of 2026-01-08")
    assert "Heliox Daily Summary" not in cli_result.stdout


def test_the_hourly_cost_limit_is_the_setting(sqlite_engine: Engine) -> None:
    insert(sqlite_engine, [row("big", START, "12000")])
    default = usage_rule_report(sqlite_engine, START, END, max_hourly_cost=Settings().max_hourly_cost_usd)
    assert default.summary() == "1 row with cost_usd above $10,000.00 an hour"
    raised = usage_rule_report(sqlite_engine, START, END, max_hourly_cost=Decimal(20000))
    assert raised.passed and raised.rows_checked == 1
