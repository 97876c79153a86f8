"""Smoke test of the benchmark harness (``python -m benchmarks.run --quick --json``): it seeds a
tiny fleet into fresh PostgreSQL databases, runs every measurement and reports numbers. Speed is
proven by the full benchmark (docs/performance.md), never asserted here."""

from __future__ import annotations

import json
import numbers
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = (
    "daily_partition",
    "naive",
    "history_growth",
    "idle_recommendations",
    "backfill",
    "definition_load",
    "storage",
    "fresh_process_runs",
    "retention_month",
    "focus_import",
    "rollup_idle",
    "nightly_refresh",
)
# Definition load: reported only. G4 needs --g4 (its own 33.6 M-row database).
GOALS = {"1", "2a", "2b", "2c", "3a", "3b", "4a", "4b", "5", "G1", "G1b", "G2", "G2b", "G5", "G3a", "G3b"}


@pytest.mark.postgres
@pytest.mark.timeout(600)  # two fresh `dagster` processes (issue 18) on a shared 2-core machine
def test_quick_benchmark_reports_every_measurement(create_postgres_database: Callable[[str], str]) -> None:
    main_url = create_postgres_database("heliox_bench_smoke")
    history_url = create_postgres_database("heliox_bench_smoke_7d")
    env = {k: v for k, v in os.environ.items() if k not in ("HELIOX_DATABASE_URL", "SLACK_WEBHOOK_URL")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--json",
            "--database-url",
            main_url,
            "--history-database-url",
            history_url,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)

    assert report["mode"] == "quick" and report["goals_enforced"] is False
    databases = report["fleet"]["databases"]
    assert databases["main"]["usage_rows"] > 0 and databases["history"]["usage_rows"] > 0
    assert databases["main"]["days"] == report["fleet"]["days"] and databases["history"]["days"] == 7

    assert set(report["measurements"]) == set(MEASUREMENTS)
    for name in MEASUREMENTS:
        values = report["measurements"][name]
        assert values, name
        for key, value in values.items():
            assert isinstance(value, numbers.Real), f"{name}.{key} = {value!r}"
            if not isinstance(value, bool):
                assert value >= 0, f"{name}.{key} = {value!r}"
    assert {g["id"] for g in report["goals"]} == GOALS
    for goal in report["goals"]:
        assert isinstance(goal["value"], numbers.Real) and isinstance(goal["met"], bool), goal
    # The naive pandas way and the project find the same idle GPUs in the same window.
    naive = report["measurements"]["naive"]
    assert naive["window_naive_findings"] == naive["window_project_findings"] > 0
    assert {"day_query_" + f"{report['fleet']['days']}d", "day_query_7d"} <= set(report["plans"])
    # The idle rule on the rollup finds exactly what the raw-row rule finds on the benchmark fleet.
    rollup = report["measurements"]["rollup_idle"]
    assert rollup["findings_identical_to_raw_rule"] is True and rollup["findings"] > 0
    assert rollup["rollup_days_read"] == 14 and rollup["raw_days_read"] == 0
