"""``gpu_utilization_hourly`` in the Dagster pipeline, against the real Prometheus server of the
session (prometheus_server.py, fifteen days of DCGM history): a backfill day and the hourly
schedule pull, fill the cost rows and report the join as metadata; an unreachable server fails
the run in one line without a secret; without PROMETHEUS_URL nothing of it is defined."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    BackfillPolicy,
    EnvVar,
    HourlyPartitionsDefinition,
    RunRequest,
    build_schedule_context,
)
from sqlalchemy import Engine, func, select

from heliox_orchestration.assets.sources import DEMO_FLEET_KEY, FOCUS_EXPORTS_KEY, UTILIZATION_KEY
from heliox_orchestration.automation.manual import error_line
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_utilization_hourly
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.environment import check_environment
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.automation_env import Heliox, make_heliox, requests_of
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.dagster_processes import free_port
from heliox_orchestration_tests.dcgm_history import BUSY_HOST, IDLE_HOST, MAPPING_YAML, at
from heliox_orchestration_tests.prometheus_server import PASSWORD, USERNAME, PrometheusServer
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

UNWATCHED = "i-0ffffffffffffff99"  # billed, never scraped
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def settings_for(url: str, mapping: Path, timezone: str = "UTC") -> Settings:
    return Settings(
        timezone=timezone, start_date=dt.date(2026, 9, 1), prometheus_url=url, dcgm_mapping_path=mapping
    )


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    path = tmp_path / "dcgm.yaml"
    path.write_text(MAPPING_YAML)
    return path


def prometheus_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("PROMETHEUS_URL", url)
    monkeypatch.setenv("PROMETHEUS_USERNAME", USERNAME)
    monkeypatch.setenv("PROMETHEUS_PASSWORD", PASSWORD)


@pytest.fixture
def heliox(
    sqlite_engine: Engine,
    slack_server: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    prometheus_server: PrometheusServer,
    mapping: Path,
) -> Heliox:
    prometheus_env(monkeypatch, prometheus_server.url)
    settings = settings_for(prometheus_server.url, mapping, "America/Los_Angeles")
    return make_heliox(sqlite_engine, slack_server, monkeypatch, settings, now=at(16, 12))


def stored_hours(engine: Engine) -> list[tuple[str, dt.datetime]]:
    t = gpu_utilization_hourly.c
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(select(t.resource_id, t.usage_hour))]


def test_a_backfill_day_pulls_its_hours_fills_the_cost_rows_and_reports_the_join(heliox: Heliox) -> None:
    day = at(4, 0)
    rows = [
        *hourly(BUSY_HOST, day, 24, "98.32", None, gpu_count=8),
        *hourly(IDLE_HOST, day, 24, "40.96", None, gpu_count=8),
        *hourly(UNWATCHED, day, 24, "12.34", None, gpu_count=1),
    ]
    insert(heliox.engine, rows)
    asset = heliox.defs.resolve_assets_def(UTILIZATION_KEY)
    assert asset.backfill_policy == BackfillPolicy.multi_run(24)
    # One run of a backfill: the 24 hourly partitions of a UTC day.
    run = heliox.run_job(
        "gpu_utilization_pull_job", tags={RANGE_START: "2026-10-04-00:00", RANGE_END: "2026-10-04-23:00"}
    )
    assert run.success
    stored = stored_hours(heliox.engine)
    assert len(stored) == 6 * 24 and {h for _, h in stored} == {
        day + dt.timedelta(hours=h) for h in range(24)
    }

    by_key = {e.asset_key: e for e in run.get_asset_materialization_events()}
    meta = {k: getattr(v, "value", v) for k, v in by_key[UTILIZATION_KEY].materialization.metadata.items()}
    assert meta["resource_hours_written"] == 6 * 24 and meta["dagster/row_count"] == 6 * 24
    assert meta["cost_rows_given_utilization"] == 48
    assert meta["unknown_utilization_resource_hours"] == 24  # the unwatched resource: unknown, not idle
    assert meta["unknown_utilization_cost_usd"] == "296.160000"  # 24 x $12.34, exact
    assert meta["gpus_billing_does_not_know"] == 4
    assert "Utilization unknown (cost, no telemetry): 24 resource-hours of 1 resources" in meta["join_report"]
    assert f"basic auth as {USERNAME}, password ****" in meta["prometheus"]

    u = gpu_usage_hourly.c
    with heliox.engine.connect() as conn:
        filled = dict(
            conn.execute(
                select(u.resource_id, func.max(u.gpu_utilization_pct))
                .where(u.gpu_utilization_pct.is_not(None))
                .group_by(u.resource_id)
            ).all()
        )
    assert set(filled) == {BUSY_HOST, IDLE_HOST} and filled[IDLE_HOST] < 5 < filled[BUSY_HOST]

    # The cost rows changed: gpu_usage_hourly reports it, and their local day is refreshed.
    usage = {
        k: getattr(v, "value", v)
        for k, v in by_key[AssetKey("gpu_usage_hourly")].materialization.metadata.items()
    }
    assert (usage["first_hour"], usage["last_hour"]) == (day.isoformat(), at(4, 23).isoformat())
    refreshes = requests_of(heliox.tick("new_usage_sensor"))
    assert [r.tags.get(RANGE_START) for r in refreshes] == ["2026-10-03"]  # local days in Los Angeles
    assert refreshes[0].tags[RANGE_END] == "2026-10-04"


def test_the_schedule_pulls_the_last_three_ended_hours(heliox: Heliox) -> None:
    schedule = heliox.defs.resolve_schedule_def("gpu_utilization_pull_schedule")
    assert schedule.cron_schedule == "10 * * * *"
    assert schedule.execution_timezone == "America/Los_Angeles"
    tick = at(5, 13, 10).astimezone(dt.timezone(dt.timedelta(hours=-7)))  # 06:10 in Los Angeles (PDT)
    with build_schedule_context(scheduled_execution_time=tick) as context:
        request = schedule.evaluate_tick(context).run_requests[0]  # type: ignore[index]
    assert isinstance(request, RunRequest)
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2026-10-05-10:00", "2026-10-05-12:00")
    run = heliox.run_request(request, "gpu_utilization_pull_job")
    assert run.success
    # The mixed host was not scraped 10:20-12:50: those hours are gaps, not zeros.
    stored = stored_hours(heliox.engine)
    assert {h for _, h in stored} == {at(5, 10), at(5, 11), at(5, 12)}
    assert len(stored) == 6 * 3 - 3
    assert run.dagster_run.tags["dagster/max_runtime"] == "900"


def test_prometheus_unreachable_fails_the_run_in_one_line_without_secrets(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, mapping: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    prometheus_env(monkeypatch, url)
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch, settings_for(url, mapping), now=at(16, 0))
    run = heliox.run_job("gpu_utilization_pull_job", partition_key="2026-10-04-05:00")
    assert not run.success
    (failure,) = run.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and error.cls_name == "Failure"
    # What the run page, the run-failure notice and `heliox run` show: one line.
    assert error_line(error).startswith(f"Prometheus at {url} is unreachable (3 attempts): "), error.message
    assert stored_hours(heliox.engine) == []
    stored = "\n".join(str(e) for e in heliox.instance.all_logs(run.run_id))
    assert PASSWORD not in stored and PASSWORD not in str(run.dagster_run.run_config)


def test_without_prometheus_url_neither_the_asset_nor_its_schedule_exists(
    tmp_path: Path, mapping: Path
) -> None:
    plain = build_defs(Settings())
    assert UTILIZATION_KEY not in set(plain.resolve_all_asset_keys())
    assert "gpu_utilization_pull_schedule" not in {s.name for s in plain.schedules or []}
    assert "prometheus" not in (plain.resources or {})
    usage = {s.key: s for s in plain.resolve_all_asset_specs()}[AssetKey("gpu_usage_hourly")]
    assert {d.asset_key for d in usage.deps} == {FOCUS_EXPORTS_KEY, DEMO_FLEET_KEY}

    with pytest.MonkeyPatch.context() as env:
        prometheus_env(env, "http://prometheus:9090")
        defs = build_defs(settings_for("http://prometheus:9090", mapping))
        source = (defs.resources or {})["prometheus"]
    # Through EnvVar: the values never reach the definitions, run config or Dagster's storage.
    assert isinstance(source.password, EnvVar) and source.password.env_var_name == "PROMETHEUS_PASSWORD"
    assert isinstance(source.url, EnvVar)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert {d.asset_key for d in specs[AssetKey("gpu_usage_hourly")].deps} == {
        FOCUS_EXPORTS_KEY,
        DEMO_FLEET_KEY,
        UTILIZATION_KEY,
    }
    partitions = defs.resolve_assets_def(UTILIZATION_KEY).partitions_def
    assert isinstance(partitions, HourlyPartitionsDefinition) and partitions.timezone == "UTC"
    assert partitions.get_first_partition_key() == "2026-09-01-00:00"


def test_prometheus_settings_are_checked_when_the_definitions_load(tmp_path: Path) -> None:
    base = {"PROMETHEUS_URL": "http://prometheus:9090"}
    assert check_environment(base).ok
    half = check_environment({**base, "PROMETHEUS_USERNAME": "heliox"})
    assert half.problems == (
        "Basic auth needs both PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD; PROMETHEUS_PASSWORD is not set.",
    )
    (tmp_path / "bad.yaml").write_text("min_coverage: 0\n")
    bad = check_environment({**base, "HELIOX_DCGM_MAPPING": str(tmp_path / "bad.yaml")})
    assert len(bad.problems) == 1 and "min_coverage" in bad.problems[0]
    # Without PROMETHEUS_URL the Prometheus variables are not looked at.
    assert check_environment({"PROMETHEUS_USERNAME": "heliox"}).ok
