"""``heliox run``: one scheduled check, end to end, right now: refresh the assets the way the
schedule does, then run the alert job the sensor would launch. Both runs land in the Dagster
instance (``DAGSTER_HOME``), so the UI shows them afterwards."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from heliox_orchestration.automation.refresh_jobs import (
    COSTS_REFRESH_JOB,
    IDLE_REFRESH_JOB,
    SUMMARY_REFRESH_JOB,
)
from heliox_orchestration.automation.run_config import op_config
from heliox_orchestration.automation.schedules import summary_run_config
from heliox_orchestration.settings import Settings

RUN_KINDS = ("daily-summary", "burn-rate", "idle-spend")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class StepOutcome:
    job: str
    success: bool
    metadata: dict[str, Any]
    error: str | None


def _run(
    defs: Definitions, instance: DagsterInstance, job: str, run_config: dict | None = None, **kwargs: Any
) -> StepOutcome:
    result: ExecuteInProcessResult = defs.resolve_job_def(job).execute_in_process(
        run_config={**QUIET, **(run_config or {})}, instance=instance, raise_on_error=False, **kwargs
    )
    metadata: dict[str, Any] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_output_data.metadata:
            metadata.update({k: getattr(v, "value", v) for k, v in event.step_output_data.metadata.items()})
    failures = result.get_step_failure_events()
    error = None
    if failures and failures[0].step_failure_data.error:
        error = failures[0].step_failure_data.error.message.strip().splitlines()[0]
    elif not result.success:
        error = "the run failed; see the Dagster UI"
    return StepOutcome(job, result.success, metadata, error)


def run_check(
    kind: str, defs: Definitions, instance: DagsterInstance, settings: Settings, now: dt.datetime
) -> list[StepOutcome]:
    """Refresh, then alert; stops after a failed refresh (bad numbers never alert)."""
    today = settings.today(now)
    if kind == "daily-summary":
        report_date = today - dt.timedelta(days=1)
        refresh = _run(
            defs,
            instance,
            SUMMARY_REFRESH_JOB,
            summary_run_config(report_date),
            partition_key=report_date.isoformat(),
        )
        alert_job, alert_config = "daily_summary_job", {"report_date": report_date.isoformat()}
        op = "send_daily_summary"
    elif kind == "burn-rate":
        refresh = _run(defs, instance, COSTS_REFRESH_JOB, partition_key=today.isoformat())
        alert_job, alert_config, op = (
            "burn_rate_alert_job",
            {"day": today.isoformat()},
            "send_burn_rate_alert",
        )
    elif kind == "idle-spend":
        refresh = _run(defs, instance, IDLE_REFRESH_JOB)
        alert_job, alert_config, op = "idle_spend_alert_job", {}, "send_idle_spend_alert"
    else:
        raise ValueError(f"unknown check {kind!r}; choose one of {', '.join(RUN_KINDS)}")
    if not refresh.success:
        return [refresh]
    return [refresh, _run(defs, instance, alert_job, op_config(op, **alert_config))]
