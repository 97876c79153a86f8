"""Telemetry from the real Prometheus into gpu_utilization_hourly, its join with the cost rows,
the two reports and the idle rule, on SQLite and PostgreSQL; and `heliox import-prometheus`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from heliox_orchestration.cli import cli
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_utilization_hourly
from heliox_orchestration.detections.idle import compute_idle_evaluation
from heliox_orchestration.ingest.dcgm_mapping import parse_mapping
from heliox_orchestration.ingest.prometheus import PrometheusClient
from heliox_orchestration.ingest.utilization import (
    fill_usage_utilization,
    ingest_utilization,
    utilization_join_report,
)
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.dcgm_history import (
    BUSY_HOST,
    GROW,
    IDLE_HOST,
    MAPPING_YAML,
    MIG,
    MIXED,
    SWAP,
    Expected,
    at,
    build_history,
    expected_hours,
)
from heliox_orchestration_tests.prometheus_server import PASSWORD, USERNAME, PrometheusServer

START, END = at(4, 0), at(8, 0)  # telemetry: 4 days
BILLED_END = at(7, 0)  # the cost export lags: 3 days billed
UNWATCHED = "i-0ffffffffffffff99"  # billed, no telemetry at all
GAP_HOURS = (at(5, 10), at(5, 11), at(5, 12))  # the mixed host was not scraped enough
HOURLY_COST = {BUSY_HOST: "98.32", IDLE_HOST: "40.96", MIXED: "10.00", MIG: "32.77", SWAP: "40.96"}


@pytest.fixture(scope="module")
def expected() -> dict[tuple[str, dt.datetime], Expected]:
    return {k: v for k, v in expected_hours(build_history()).items() if START <= k[1] < END}


def billing() -> list[dict[str, Any]]:
    rows = []
    for rid, cost in HOURLY_COST.items():
        model = None if rid == MIXED else "tagged-model"
        rows += hourly(rid, START, 72, cost, None, gpu_count=8, model_name=model, team=None)
    rows += hourly(UNWATCHED, START, 72, "12.34", None, gpu_count=1)
    for r in rows:  # a utilization from elsewhere (a CSV import) in a telemetry gap hour
        if r["resource_id"] == MIXED and r["usage_hour"] == GAP_HOURS[1]:
            r["gpu_utilization_pct"] = 42.0
    return rows


def utilization_of(engine: Engine) -> dict[tuple[str, dt.datetime], float | None]:
    u = gpu_usage_hourly.c
    with engine.connect() as conn:
        return {
            (r[0], r[1]): r[2]
            for r in conn.execute(select(u.resource_id, u.usage_hour, u.gpu_utilization_pct))
        }


def test_telemetry_lands_joins_cost_and_reports_both_gaps(
    any_engine: Engine, prometheus_server: PrometheusServer, expected: dict[tuple[str, dt.datetime], Expected]
) -> None:
    client = PrometheusClient(prometheus_server.url, username=USERNAME, password=PASSWORD)
    mapping = parse_mapping(yaml.safe_load(MAPPING_YAML), "test")
    insert(any_engine, billing())
    settings = Settings()
    assert compute_idle_evaluation(any_engine, settings, BILLED_END).findings.empty  # unknown is never idle

    report = ingest_utilization(any_engine, client, mapping, START, END)
    assert report.rows_written == len(expected) == 6 * 96 - 3 and report.rows_replaced == 0
    assert report.resources == {BUSY_HOST, IDLE_HOST, MIXED, GROW, MIG, SWAP} and not report.warnings()
    again = ingest_utilization(any_engine, client, mapping, START, END)  # idempotent replace
    assert again.rows_replaced == again.rows_written == report.rows_written
    t = gpu_utilization_hourly.c
    with any_engine.connect() as conn:
        stored = conn.execute(select(t.resource_id, t.usage_hour, t.utilization_pct, t.gpus)).all()
    assert len(stored) == len(expected)
    for rid, hour, pct, gpus in stored:
        want = expected[(rid, hour)]
        assert abs(Fraction(str(pct)) - want.utilization) <= Fraction(1, 200) and gpus == want.gpus

    filled = fill_usage_utilization(any_engine, START, END, attribute_workloads=True)
    telemetry = {(rid, hour): pct for rid, hour, pct, _ in stored}
    billed_with_telemetry = [k for k in utilization_of(any_engine) if k in telemetry]
    assert filled.utilization_rows == len(billed_with_telemetry) == 5 * 72 - 3
    # Teams of the busy, MIG and mixed hosts, the mixed host's model (not in its gap hours).
    assert filled.attributed_rows == 72 + 72 + 2 * (72 - 3)
    after = utilization_of(any_engine)
    for key in billed_with_telemetry:
        assert after[key] == pytest.approx(telemetry[key], abs=1e-9)
    assert [after[(MIXED, h)] for h in GAP_HOURS] == [None, 42.0, None]  # never overwritten with NULL
    assert {after[(UNWATCHED, h)] for h in (START, at(6, 23))} == {None}
    assert fill_usage_utilization(any_engine, START, END, attribute_workloads=True).utilization_rows == 0
    u = gpu_usage_hourly.c
    with any_engine.connect() as conn:
        attributed = conn.execute(
            select(u.resource_id, u.model_name, u.team)
            .where(u.usage_hour == at(6, 0))
            .order_by(u.resource_id)
        ).all()
    assert (MIXED, "whisper-large", "team-a") in attributed
    assert (BUSY_HOST, "tagged-model", "llm-serving") in attributed  # a tagged model stays

    join = utilization_join_report(any_engine, START, END)
    assert (join.billed_hours, join.billed_with_telemetry) == (6 * 72, 5 * 72 - 3)
    assert join.billed_through == BILLED_END
    assert [(r.resource_id, r.hours, r.cost_usd) for r in join.unknown] == [
        (UNWATCHED, 72, Decimal("888.480000")),  # 72 x $12.34, exact
        (MIXED, 3, Decimal("30.000000")),
    ]
    [unbilled] = join.unbilled
    assert (
        unbilled.resource_id,
        unbilled.resource_label,
        unbilled.gpus,
        unbilled.gpu_type,
        unbilled.hours,
    ) == (
        GROW,
        "hostname=gpu-grow-01",
        8,
        "T4",
        72,
    )
    assert join.telemetry_hours_not_yet_billed == 6 * 24
    assert any("hostname=gpu-grow-01 -> " in line for line in join.lines())
    assert join.metadata()["unknown_utilization_cost_usd"] == "918.480000"
    assert report.metadata()["resource_hours_written"] == report.rows_written

    findings = compute_idle_evaluation(any_engine, settings, BILLED_END).findings
    assert set(findings["resource_id"]) == {IDLE_HOST, SWAP}  # UNWATCHED: unknown, not idle


def test_import_prometheus_command(
    tmp_path: Path, prometheus_server: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dcgm.yaml").write_text(MAPPING_YAML)
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("PROMETHEUS_URL", prometheus_server.url)
    monkeypatch.setenv("PROMETHEUS_USERNAME", USERNAME)
    monkeypatch.setenv("PROMETHEUS_PASSWORD", PASSWORD)
    monkeypatch.setenv("HELIOX_DCGM_MAPPING", str(tmp_path / "dcgm.yaml"))
    args = ["import-prometheus", "--start", "2026-10-06", "--end", "2026-10-07T06:00", "--database-url", url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "(basic auth as heliox-test, password ****)" in result.output and PASSWORD not in result.output
    assert "Wrote 180 resource-hours of 6 resources" in result.output
    with make_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(gpu_utilization_hourly)).scalar_one() == 180

    monkeypatch.setenv("PROMETHEUS_PASSWORD", "wrong-" + PASSWORD)
    result = CliRunner().invoke(cli, args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "HTTP 401" in errors[0]
    assert PASSWORD not in result.output and "Traceback" not in result.output

    (tmp_path / "dcgm.yaml").write_text("metric: DCGM_FI_DEV_POWER_USAGE\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "metric: 'DCGM_FI_DEV_POWER_USAGE' is not supported" in result.output
