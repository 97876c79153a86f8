"""``heliox run``: one scheduled check, end to end, right now: refresh the assets the way the
schedule does, then run the alert job the sensor would launch.

Both are ordinary runs of the ``heliox_orchestration`` code location (the location name of
workspace.yaml, deploy/workspace.yaml and the code server): the UI lists them on the job's page
and the Overview timeline, and while a daemon runs, run monitoring bounds them
(``dagster/max_runtime``) and the run-failure sensor reports them. They execute synchronously, in
this process: no daemon is needed to run them.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance
from dagster._core.execution.api import execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.error import SerializableErrorInfo

from heliox_orchestration.alerts.catalog import kind_named, kinds_with
from heliox_orchestration.automation.run_config import STARTED_BY_HELIOX_RUN, STARTED_BY_TAG
from heliox_orchestration.partitions import PARTITION_TAG
from heliox_orchestration.settings import Settings

RUN_KINDS = kinds_with("manual")
LOCATION_NAME = "heliox_orchestration"  # workspace.yaml, deploy/workspace.yaml, the code server
DEFINITIONS_MODULE = "heliox_orchestration.definitions"
# `heliox run` prints each run's outcome itself, in one line (the run's logs are in the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass(frozen=True)
class CheckFailure:
    check: str  # asset:check, as the UI names it
    reason: str  # the check's one-line description of what failed


@dataclass(frozen=True)
class StepOutcome:
    job: str
    run_id: str
    success: bool
    metadata: dict[str, Any]
    error: str | None
    failed_checks: tuple[CheckFailure, ...] = ()


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


# Errors raised on purpose, whose message is the whole story (a blocking check's own reasons are
# printed after it).
PLAIN_ERRORS = {"Failure", "DagsterAssetCheckFailedError"}


def error_line(error: SerializableErrorInfo) -> str:
    """The error's first line, after its unqualified class name unless it was raised on purpose."""
    if error.cls_name == "DagsterExecutionInterruptedError":
        return "interrupted"
    line = first_line(error.message)
    qualified = (
        re.match(rf"^[\w.]*\b{re.escape(error.cls_name or '')}(: |$)", line) if error.cls_name else None
    )
    if qualified is None:
        return line
    rest = line[qualified.end() :]
    if error.cls_name in PLAIN_ERRORS and rest:
        return rest.rstrip(":")
    return f"{error.cls_name}: {rest}" if rest else str(error.cls_name)


class HelioxLocation:
    """The Heliox code location loaded in this process under its deployed name, so that the runs
    it creates carry the same origin (location, repository, job snapshot) as the runs the daemon
    launches from the code server."""

    def __init__(self, location: InProcessCodeLocation, instance: DagsterInstance) -> None:
        self.location = location
        self.instance = instance
        ((self.repository_name, self.repository),) = location.get_repositories().items()

    def run(
        self, job_name: str, run_config: Mapping[str, Any] | None = None, partition_key: str | None = None
    ) -> StepOutcome:
        # What `dagster job launch` does to create a run (dagster/_cli/job.py, _create_run), then
        # what the run worker does with it (`dagster api execute_run`), in this process. Dagster
        # has no public API that creates a run of a code location.
        remote_job = self.repository.get_full_job(job_name)
        # Steps run in this process, one after the other: the code location's executor.
        config = {**QUIET, **(run_config or {})}
        tags = {**remote_job.tags, STARTED_BY_TAG: STARTED_BY_HELIOX_RUN}
        if partition_key is not None:
            tags[PARTITION_TAG] = partition_key
        plan = self.location.get_execution_plan(
            remote_job, config, step_keys_to_execute=None, known_state=None, instance=self.instance
        ).execution_plan_snapshot
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            status=None,
            tags=tags,
            root_run_id=None,
            parent_run_id=None,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            op_selection=None,
            asset_selection=None,
            asset_check_selection=None,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_graph=self.repository.asset_graph,
        )
        job = self.location.get_reconstructable_job(self.repository_name, job_name)
        return outcome_of(job_name, execute_run(job, run, self.instance))


def outcome_of(job_name: str, result: JobExecutionResult) -> StepOutcome:
    metadata: dict[str, Any] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_output_data.metadata:
            metadata.update({k: getattr(v, "value", v) for k, v in event.step_output_data.metadata.items()})
    failed_checks = tuple(
        CheckFailure(f"{e.asset_key.to_user_string()}:{e.check_name}", first_line(e.description))
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.blocking
    )
    failures = result.get_step_failure_events()
    error = None
    if failures and failures[0].step_failure_data.error:
        error = error_line(failures[0].step_failure_data.error)
    elif not result.success:
        error = "the run failed; see the Dagster UI"
    return StepOutcome(job_name, result.run_id, result.success, metadata, error, failed_checks)


@contextmanager
def heliox_location(instance: DagsterInstance) -> Iterator[HelioxLocation]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE),
        location_name=LOCATION_NAME,
    )
    with origin.create_location(instance) as location:
        yield HelioxLocation(location, instance)


def run_check(kind: str, location: HelioxLocation, settings: Settings, now: dt.datetime) -> list[StepOutcome]:
    """Refresh, then alert, as the kind's registry entry says; stops after a failed refresh (bad
    numbers never alert)."""
    alert_kind = kind_named(kind)
    manual = alert_kind.manual
    if manual is None:
        raise ValueError(f"{kind} cannot be run by hand; choose one of {', '.join(RUN_KINDS)}")
    refresh = location.run(manual.refresh_job, partition_key=manual.partition(settings, now))
    if not refresh.success:
        return [refresh]
    return [refresh, location.run(alert_kind.job_name, alert_kind.run_config(**manual.config(settings, now)))]
