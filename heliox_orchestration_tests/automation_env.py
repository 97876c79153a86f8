"""A Heliox code location wired to a real database and the loopback Slack server, standing at a
chosen instant: what the automation tests drive schedules, sensors and jobs through."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    build_run_status_sensor_context,
    build_sensor_context,
)
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.routes import webhook_variables
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import SlackRoutes
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.crafted import engine_url, hourly, insert
from heliox_orchestration_tests.slack_server import DEFAULT_PATH, FakeSlackWebhook

NOW = dt.datetime(2026, 1, 9, 17, 0, tzinfo=dt.UTC)
TODAY = "2026-01-09"
SETTINGS = Settings(burn_rate_threshold_usd=Decimal("1000"))


@dataclass
class Heliox:
    engine: Engine
    slack: FakeSlackWebhook
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    monkeypatch: pytest.MonkeyPatch
    webhook_path: str = DEFAULT_PATH

    def at(self, instant: dt.datetime) -> None:
        """Move the clock the alert ops and sensors read."""
        self.monkeypatch.setattr(clock, "utc_now", lambda: instant)

    def resources(self) -> dict[str, Any]:
        """The resources of the definitions, with the webhooks the environment holds now."""
        variables = webhook_variables(self.settings, all_kinds())
        webhooks = {v: os.environ[v] for v in variables if v in os.environ and v != "SLACK_WEBHOOK_URL"}
        return {
            "heliox_db": HelioxDatabase(url=engine_url(self.engine)),
            "slack": SlackRoutes(
                webhook_url=self.slack.url(self.webhook_path), webhooks=webhooks, backoff_seconds=0.01
            ),
            "heliox_settings": HelioxSettings.of(self.settings),
        }

    def after_success(self, sensor_name: str, refresh: ExecuteInProcessResult) -> Any:
        """Evaluate a run status sensor for a refresh that succeeded, as the daemon would."""
        context = build_run_status_sensor_context(
            sensor_name=sensor_name,
            dagster_event=refresh.get_run_success_event(),
            dagster_instance=self.instance,
            dagster_run=refresh.dagster_run,
            resources=self.resources(),
        )
        return self.defs.resolve_sensor_def(sensor_name)(context)

    def use_webhook(self, path: str) -> None:
        """Point SLACK_WEBHOOK_URL at another webhook of the loopback server, as an operator
        replacing a refused webhook does, and reload the definitions."""
        self.webhook_path = path
        self.monkeypatch.setenv("SLACK_WEBHOOK_URL", self.slack.url(path))
        self.defs = build_defs(self.settings)

    def run_job(self, name: str, **kwargs: Any) -> ExecuteInProcessResult:
        return self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance, raise_on_error=False, **kwargs
        )

    def run_request(self, request: RunRequest, job_name: str | None = None) -> ExecuteInProcessResult:
        return self.run_job(
            job_name or request.job_name or "",
            run_config=request.run_config,
            partition_key=request.partition_key,
            tags=request.tags,
        )

    def tick(self, sensor_name: str, cursor: str | None = None) -> SensorResult:
        sensor = self.defs.resolve_sensor_def(sensor_name)
        context = build_sensor_context(
            instance=self.instance, cursor=cursor, resources=self.resources(), definitions=self.defs
        )
        result = sensor(context)
        assert isinstance(result, SensorResult), result
        return result

    def run_failure_tick(self, run_id: str) -> None:
        """Evaluate run_failure_slack_sensor for a failed run, as the daemon would."""
        (entry,) = self.instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
        run = self.instance.get_run_by_id(run_id)
        assert run is not None and entry.dagster_event is not None
        context = build_run_status_sensor_context(
            sensor_name="run_failure_slack_sensor",
            dagster_event=entry.dagster_event,
            dagster_instance=self.instance,
            dagster_run=run,
            resources=self.resources(),
        ).for_run_failure()
        self.defs.resolve_sensor_def("run_failure_slack_sensor")(context)

    def refresh_today(self, day: str = TODAY) -> ExecuteInProcessResult:
        result = self.run_job("gpu_costs_refresh_job", partition_key=day)
        assert result.success
        return result

    def spend(self, resource_id: str, start: dt.datetime, hours: int, hourly_cost: str, **attrs: Any) -> None:
        insert(self.engine, hourly(resource_id, start, hours, hourly_cost, 60.0, **attrs))

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {e["alert_key"]: e for e in ledger.list_entries(self.engine)}

    def texts(self) -> list[str]:
        """The fallback text of every message Slack accepted."""
        return [r.json["text"] for r in self.slack.requests if r.status == 200]


def make_heliox(
    engine: Engine,
    slack: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings = SETTINGS,
    now: dt.datetime = NOW,
) -> Heliox:
    """Definitions as production builds them: secrets from the environment through EnvVar."""
    monkeypatch.setenv("HELIOX_DATABASE_URL", engine_url(engine))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url())
    heliox = Heliox(engine, slack, settings, build_defs(settings), DagsterInstance.ephemeral(), monkeypatch)
    heliox.at(now)
    return heliox


def requests_of(result: SensorResult) -> list[RunRequest]:
    return list(result.run_requests or [])


def keys_of(requests: Iterable[RunRequest]) -> list[str | None]:
    return [r.run_key for r in requests]
