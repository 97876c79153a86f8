from __future__ import annotations

import subprocess
import sys

from dagster import Definitions


def test_definitions_load_with_no_environment() -> None:
    """A fresh process with no Heliox variables at all loads and validates the code location."""
    code = (
        "from dagster import Definitions\n"
        "from heliox_orchestration.definitions import defs\n"
        "assert isinstance(defs, Definitions)\n"
        "Definitions.validate_loadable(defs)\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_definitions_validate_in_process() -> None:
    from heliox_orchestration.definitions import defs

    Definitions.validate_loadable(defs)
    assert "heliox_db" in defs.resources


def test_jobs_sensors_and_checks_are_module_level_definitions() -> None:
    """Only the partitioned assets and the schedules are built from load-time settings; every
    other definition of the code location is the object its module defines."""
    from heliox_orchestration.alerts.catalog import all_kinds
    from heliox_orchestration.alerts.jobs import alert_job
    from heliox_orchestration.assets.checks import OUTPUT_CHECKS
    from heliox_orchestration.assets.recommendations import idle_gpu_recommendations
    from heliox_orchestration.assets.refresh import REFRESH_JOBS
    from heliox_orchestration.automation import sensors
    from heliox_orchestration.definitions import defs

    # Definitions binds the resources to copies; the ops, sensor functions and assets are the same.
    for kind in all_kinds():
        (op,) = defs.resolve_job_def(kind.job_name).graph.node_defs
        assert op is alert_job(kind).graph.node_defs[0]
    assert {j.name for j in REFRESH_JOBS} <= {j.name for j in defs.resolve_all_job_defs()}
    for sensor in (
        sensors.burn_rate_sensor,
        sensors.spend_anomalies_sensor,
        sensors.stale_data_sensor,
        sensors.run_failure_slack_sensor,
    ):
        assert defs.resolve_sensor_def(sensor.name).name == sensor.name
    # Every sensor: 4 fixed ones, the redelivery sensor, new_usage_sensor and one per AfterRefresh
    # trigger (idle-spend, idle-resolved, daily-summary, spend-anomaly, budget).
    names = {s.name for s in defs.sensors or []}
    assert len(names) == 11, sorted(names)
    assert {"spend_anomalies_sensor", "spend_anomaly_alert_sensor", "budget_alert_sensor"} <= names
    assert defs.resolve_assets_def("idle_gpu_recommendations").op is idle_gpu_recommendations.op
    assert set(defs.asset_checks or []) >= set(OUTPUT_CHECKS)
