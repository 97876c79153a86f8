"""Every number in Slack comes from checked rows, and ordinary data never silences alerting: the
assets' input checks however they are launched, a row of 2099, a bad row in the summary's 30 days
or in the idle window; against the loopback Slack server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    ExecuteInProcessResult,
    build_run_status_sensor_context,
    build_schedule_context,
    job,
    materialize,
    op,
)
from sqlalchemy import Engine, delete

from heliox_orchestration.assets import DAILY_COSTS_KEY, build_asset_defs
from heliox_orchestration.costs.daily_costs import compute_daily_costs, write_daily_costs
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration_tests.automation_env import NOW, TODAY, Heliox, make_heliox, requests_of
from heliox_orchestration_tests.crafted import engine_url, hourly, insert, row, table_count, utc
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

MIDNIGHT = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)
WINDOW_START = NOW - dt.timedelta(days=14)
NOT_JUDGED = (
    "⚠️ 1 GPU not judged: its usage rows fail checks (negative cost_usd); fix them in gpu_usage_hourly"
)


@pytest.fixture
def heliox(sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch) -> Heliox:
    return make_heliox(sqlite_engine, slack_server, monkeypatch)


def checks(result: ExecuteInProcessResult) -> dict[str, Any]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def step_error(result: ExecuteInProcessResult) -> str:
    (failure,) = result.get_step_failure_events()
    return str(failure.step_failure_data.user_failure_data.description)


def materialize_daily_costs_alone(heliox: Heliox) -> ExecuteInProcessResult:
    """What `dagster asset materialize --select daily_gpu_costs` and the UI's button do: the asset
    selected by name, no refresh job."""
    defs = build_asset_defs(heliox.settings)
    return materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],  # type: ignore[list-item]
        selection="daily_gpu_costs",
        partition_key=TODAY,
        instance=heliox.instance,
        resources=heliox.resources(),
        raise_on_error=False,
    )


def send_idle_alert(heliox: Heliox) -> ExecuteInProcessResult:
    refresh = heliox.run_job("idle_recommendations_refresh_job")
    assert refresh.success
    context = build_run_status_sensor_context(
        sensor_name="idle_spend_alert_sensor",
        dagster_event=refresh.get_run_success_event(),
        dagster_instance=heliox.instance,
        dagster_run=refresh.dagster_run,
        resources=heliox.resources(),
    )
    request = heliox.defs.resolve_sensor_def("idle_spend_alert_sensor")(context)
    assert heliox.run_request(request, "idle_spend_alert_job").success
    return refresh


def refresh_summary(heliox: Heliox) -> tuple[ExecuteInProcessResult, Any]:
    """The 9 AM tick: refresh yesterday (2026-01-08) and the summary; the sensor's request if any."""
    schedule = heliox.defs.resolve_schedule_def("daily_summary_schedule")
    context = build_schedule_context(
        scheduled_execution_time=NOW.replace(hour=9), repository_def=heliox.defs.get_repository_def()
    )
    (refresh_request,) = schedule.evaluate_tick(context).run_requests or []
    refresh = heliox.run_request(refresh_request, "daily_summary_refresh_job")
    if not refresh.success:
        return refresh, None
    sensor_context = build_run_status_sensor_context(
        sensor_name="daily_summary_sensor",
        dagster_event=refresh.get_run_success_event(),
        dagster_instance=heliox.instance,
        dagster_run=refresh.dagster_run,
        resources=heliox.resources(),
    )
    return refresh, heliox.defs.resolve_sensor_def("daily_summary_sensor")(sensor_context)


def blocks_text(heliox: Heliox, index: int) -> str:
    return json.dumps(heliox.slack.requests[index].json["blocks"], ensure_ascii=False)


def test_daily_costs_materialized_alone_refuse_bad_rows_and_the_sensor_trusts_only_checked_runs(
    heliox: Heliox,
) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")  # $1,020 of a $1,000 threshold
    insert(heliox.engine, [row("gpu-bad", MIDNIGHT + dt.timedelta(hours=2), "-10.00")])

    refused = materialize_daily_costs_alone(heliox)
    assert not refused.success and refused.get_asset_materialization_events() == []
    check = checks(refused)["daily_gpu_costs:valid_usage_rows"]
    assert not check.passed and check.description.startswith("1 row with negative cost_usd")
    assert "'gpu-bad' at 2026-01-09 02:00 UTC: cost_usd=-10" in step_error(refused)
    assert requests_of(heliox.tick("burn_rate_sensor")) == []

    # Defense in depth: today's numbers written and a materialization reported by a run that
    # succeeded but never ran the input check ($1,010 would be over the threshold): no alert.
    engine = heliox.engine
    write_daily_costs(engine, compute_daily_costs(engine, MIDNIGHT.date(), MIDNIGHT.date(), "UTC"), NOW)

    @op
    def report_materialization(context) -> None:
        context.log_event(AssetMaterialization(DAILY_COSTS_KEY, partition=TODAY))

    @job
    def unchecked_writer() -> None:
        report_materialization()

    assert unchecked_writer.execute_in_process(instance=heliox.instance).success
    skipped = heliox.tick("burn_rate_sensor")
    assert requests_of(skipped) == [] and "checked refresh" in str(skipped.skip_reason)

    # The row fixed, the same launch passes its check, and the sensor alerts.
    with engine.begin() as conn:
        conn.execute(delete(gpu_usage_hourly).where(gpu_usage_hourly.c.resource_id == "gpu-bad"))
    assert materialize_daily_costs_alone(heliox).success
    (request,) = requests_of(heliox.tick("burn_rate_sensor", skipped.cursor))
    assert request.run_key == f"burn-rate:{TODAY}:100"


def test_dagster_asset_materialize_refuses_bad_rows(sqlite_engine: Engine, tmp_path: Path) -> None:
    """The real command line: non-zero exit, the rule and the row named, nothing written."""
    start = utc(2026, 1, 15)
    insert(
        sqlite_engine,
        [*hourly("good", start, 24, "1.00", 50.0), row("refund", start + dt.timedelta(hours=5), "-12.29")],
    )
    home = tmp_path / "dagster-home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HELIOX_DATABASE_URL": engine_url(sqlite_engine)}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "heliox_orchestration.definitions",
    ]
    command += ["--select", "daily_gpu_costs", "--partition", "2026-01-15"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "daily_gpu_costs 2026-01-15 was not written: 1 row with negative cost_usd" in output
    assert "'refund' at 2026-01-15 05:00 UTC: cost_usd=-12.29" in output
    assert table_count(sqlite_engine, "daily_gpu_costs") == 0


def test_a_row_dated_2099_silences_nothing(heliox: Heliox) -> None:
    insert(heliox.engine, hourly("idle-h100", WINDOW_START, 14 * 24, "12.29", 0.5))
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    insert(heliox.engine, [row("typo-2099", utc(2099, 1, 1), "5.00")])

    refresh = heliox.refresh_today()
    warning = checks(refresh)["daily_gpu_costs:no_future_usage"]
    assert not warning.passed and warning.severity.value == "WARN"
    assert warning.description.startswith("1 row with usage_hour later than now")
    assert "typo-2099" in warning.metadata["examples"].value
    (burn,) = requests_of(heliox.tick("burn_rate_sensor"))
    assert heliox.run_request(burn, "burn_rate_alert_job").success

    send_idle_alert(heliox)

    summary_refresh, summary = refresh_summary(heliox)
    assert summary_refresh.success and not checks(summary_refresh)["daily_gpu_costs:no_future_usage"].passed
    assert heliox.run_request(summary, "daily_summary_job").success

    texts = heliox.texts()
    assert len(texts) == 3
    assert "High Burn Rate Alert" in texts[0] and "Idle GPU Spend" in texts[1] and "Daily Summary" in texts[2]

    # The stale-data sensor does not take 2099 for fresh data.
    assert "Fresh: newest usage hour 2026-01-09 16:00 UTC" in str(
        heliox.tick("stale_data_sensor").skip_reason
    )
    heliox.at(dt.datetime(2026, 1, 10, 10, tzinfo=dt.UTC))
    (stale,) = requests_of(heliox.tick("stale_data_sensor"))
    assert stale.run_key == "stale-data:2026-01-09T16:00:00+00:00"


def test_a_bad_row_blocks_only_the_numbers_it_would_change(heliox: Heliox) -> None:
    # idle-r is idle too, but one of its rows ten days back is a negative cost: it is in the idle
    # window and in the summary's 30 days, not in today's burn rate.
    idle_r = hourly("idle-r", WINDOW_START, 14 * 24, "3.00", 0.5)
    idle_r[96] = row("idle-r", idle_r[96]["usage_hour"], "-3.00", 0.5)
    insert(heliox.engine, [*hourly("idle-h100", WINDOW_START, 14 * 24, "12.29", 0.5), *idle_r])
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")

    # The summary: refused, naming the row; nothing stored, nothing sent.
    summary_refresh, summary = refresh_summary(heliox)
    assert not summary_refresh.success and summary is None
    message = step_error(summary_refresh)
    assert message.startswith(
        "gpu_cost_summary of 2026-01-08 was not written: 1 row with negative cost_usd in the local "
        "days 2025-12-10 to 2026-01-08 (UTC), e.g. 'idle-r' at 2025-12-30 17:00 UTC: cost_usd=-3 "
        "(negative cost_usd). Fix them in gpu_usage_hourly"
    )
    assert table_count(heliox.engine, "gpu_cost_summary") == 0
    materialized = {e.asset_key.to_user_string() for e in summary_refresh.get_asset_materialization_events()}
    assert materialized == {"daily_gpu_costs", "idle_gpu_recommendations"}

    # The burn-rate alert: today's rows are fine, it goes out.
    heliox.refresh_today()
    (burn,) = requests_of(heliox.tick("burn_rate_sensor"))
    assert heliox.run_request(burn, "burn_rate_alert_job").success

    # The idle alert: idle-r is not judged (a warning names it), idle-h100 is alerted.
    refresh = send_idle_alert(heliox)
    withheld = checks(refresh)["idle_gpu_recommendations:valid_usage_rows"]
    assert not withheld.passed and "'idle-r' (1 rows: negative cost_usd)" in withheld.description
    idle_keys = {k for k in heliox.ledger() if k.startswith("idle-spend:")}
    assert idle_keys == {"idle-spend:idle-h100:2026-W02"}
    assert [t.split(":")[0] for t in heliox.texts()] == [
        "🔥 High Burn Rate Alert",
        "⚠️ Idle GPU Spend Detected",
    ]
    assert NOT_JUDGED in blocks_text(heliox, 1) and "idle-r" not in blocks_text(heliox, 1)
