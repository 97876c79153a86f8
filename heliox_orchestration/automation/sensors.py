"""Sensors: they turn successful refreshes into alert runs, watch for stale data, report failed
runs in Slack and redeliver failed alerts. All run by default; the ledger keeps every alert to
one message. The sensor of an alert kind with an ``AfterRefresh`` trigger is built from its
registry entry (``trigger_sensors``); the others are defined here once (the burn-rate sensor in
``burn_rate_sensor.py``). Every sensor honours ``ALERTS_ENABLED`` and the mutes, and says so in
its skip reason ("muted until ... by ...: reason")."""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from heliox_orchestration import clock
from heliox_orchestration.alerts import kinds, ledger
from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.delivery import AlertNotDelivered
from heliox_orchestration.alerts.jobs import alert_job
from heliox_orchestration.alerts.kinds import AlertKeyError, AlertKind, kind_of
from heliox_orchestration.alerts.mutes import (
    active_mutes,
    kind_wide,
    sensor_hold,
    skip_reason,
    switched_off,
)
from heliox_orchestration.alerts.routes import UnknownDestination, team_of_key, webhook_for
from heliox_orchestration.alerts.run_failure import notify_run_failure
from heliox_orchestration.alerts.stale_data import STALE_DATA, stale_key
from heliox_orchestration.assets.refresh import REFRESH_JOBS
from heliox_orchestration.automation.anomaly_sensor import spend_anomalies_sensor
from heliox_orchestration.automation.burn_rate_sensor import burn_rate_sensor
from heliox_orchestration.automation.run_config import STARTED_BY_HELIOX_RUN, STARTED_BY_TAG
from heliox_orchestration.detections.freshness import cron_hours, is_stale, newest_usage_hour
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import SlackRoutes
from heliox_orchestration.settings import Settings

RUNNING = DefaultSensorStatus.RUNNING
HELIOX_RUN_SKIP = "The refresh was started by `heliox run`, which runs the alert job itself."

# A failed delivery is redelivered REDELIVERY_WAIT after it failed, at the first tick of a sensor
# ticking every REDELIVERY_INTERVAL_SECONDS: 5-6 minutes after the failure (an abandoned send:
# STALE_SENDING after its last sign of life, 10-11 minutes), plus the time the run takes to start.
REDELIVERY_WAIT = dt.timedelta(minutes=5)
REDELIVERY_INTERVAL_SECONDS = 60
MAX_REDELIVERY_ATTEMPTS = 24  # HTTP attempts, about six runs


@sensor(
    name="stale_data_sensor",
    job=alert_job(STALE_DATA),
    minimum_interval_seconds=900,
    default_status=RUNNING,
    description="During the checking hours, alerts once per gap when the newest usage is older "
    "than STALE_DATA_HOURS: a silent pipeline must not look like a cheap day.",
)
def stale_data_sensor(
    context: SensorEvaluationContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> SensorResult:
    settings = heliox_settings.get()
    now = clock.utc_now()
    if now.astimezone(settings.tz).hour not in cron_hours(settings.burn_rate_check_cron):
        return SensorResult(skip_reason="Outside the checking hours.", cursor=context.cursor)
    newest = newest_usage_hour(heliox_db.get_engine(), now)
    if not is_stale(newest, now, settings.stale_data_hours):
        return SensorResult(skip_reason=f"Fresh: newest usage hour {newest:%Y-%m-%d %H:%M} UTC.", cursor=None)
    key = stale_key(newest)
    if context.cursor == key:
        return SensorResult(skip_reason="Already alerted for this gap.", cursor=key)
    config = {"newest_usage_hour": newest.isoformat() if newest else None}
    held = sensor_hold(STALE_DATA, heliox_db.get_engine(), settings, now, config)
    if held is not None:
        # The cursor stays: when the mute ends, a gap still open is alerted.
        return SensorResult(skip_reason=held, cursor=context.cursor)
    request = RunRequest(run_key=key, run_config=STALE_DATA.run_config(**config))
    return SensorResult(run_requests=[request], cursor=key)


@run_failure_sensor(
    name="run_failure_slack_sensor",
    default_status=RUNNING,
    description="Posts a short Slack message for a failed Heliox run, once; none when the run's "
    "alert was delivered or its Slack failure is already tracked in the alert ledger.",
)
def run_failure_slack_sensor(
    context: RunFailureSensorContext,
    slack: SlackRoutes,
    heliox_db: HelioxDatabase,
    heliox_settings: HelioxSettings,
) -> None:
    run_id = context.dagster_run.run_id
    settings = heliox_settings.get()
    try:
        outcome = notify_run_failure(
            heliox_db.get_engine(), slack, context.instance, run_id, settings, clock.utc_now()
        )
    except AlertNotDelivered as exc:
        # Recorded failed in the ledger: alert_redelivery_sensor resends it (run_failure_notice_job).
        context.log.warning(f"Run-failure notice of run {run_id} not delivered: {exc}")
        return
    context.log.info(outcome if isinstance(outcome, str) else f"Run-failure notice {outcome.status}")


def redelivery_requests(
    rows: Sequence, webhook_of: Callable[[str], str | None], held_of: Callable[[str], str | None]
) -> tuple[dict[str, RunRequest], list[str], list[str], list[str]]:
    """The runs that redeliver the ``ledger.redeliverable`` rows, one per kind's scope; and the
    keys their destination's webhook refused (``webhook_of(key)``: its fingerprint; they wait
    for another one), those out of attempts and those of a kind switched off or muted."""
    requests: dict[str, RunRequest] = {}
    refused, exhausted, held = [], [], []
    for row in rows:
        if row.attempts >= MAX_REDELIVERY_ATTEMPTS:
            exhausted.append(row.alert_key)
        elif held_of(row.alert_key) is not None:
            held.append(row.alert_key)
        elif (
            row.status == ledger.FAILED
            and row.refused_webhook is not None
            and (row.refused_webhook == webhook_of(row.alert_key))
        ):
            refused.append(row.alert_key)
        elif (request := kinds.redelivery_request(row.alert_key, row.updated_at)) and request.run_key:
            requests[request.run_key] = request
    return requests, refused, exhausted, held


class _Destinations:
    """Per key of the ledger: its destination's webhook, and whether its kind is held back."""

    def __init__(self, slack: SlackRoutes, settings: Settings, engine: Any, now: dt.datetime) -> None:
        self.slack, self.settings, self.engine, self.now = slack, settings, engine, now
        self.variables: set[str] = set()
        self._held: dict[str, str | None] = {}

    def webhook(self, key: str) -> str | None:
        try:
            route = webhook_for(self.slack, kind_of(key), team_of_key(key, self.settings), self.settings)
        except (AlertKeyError, UnknownDestination):
            return None
        self.variables.add(route.variable)
        return route.fingerprint()

    def held(self, key: str) -> str | None:
        try:
            name = kind_of(key).name
            team_of_key(key, self.settings)
        except AlertKeyError:
            return None
        except UnknownDestination as exc:
            # Nothing could deliver it: relaunching its job every tick would change nothing.
            return f"{key}: {exc}."
        if name not in self._held:
            whole = kind_wide(active_mutes(self.engine, self.now, name))
            off = switched_off(name, self.settings)
            self._held[name] = off or (skip_reason(whole, self.settings.timezone) if whole else None)
        return self._held[name]


def redelivery_sensor(alert_kinds: Sequence[AlertKind]) -> SensorDefinition:
    """The sensor that relaunches the job of any alert whose delivery failed, for these kinds."""

    @sensor(
        name="alert_redelivery_sensor",
        jobs=[alert_job(kind) for kind in alert_kinds if kind.redelivered],
        minimum_interval_seconds=REDELIVERY_INTERVAL_SECONDS,
        default_status=RUNNING,
        description="Re-launches the job of any alert whose delivery failed, 5-6 minutes after the "
        "failure, while it is still relevant (burn rate: its day; idle: 24 h; summary: its day); "
        "an alert a webhook refused waits until its destination's webhook variable changes.",
    )
    def alert_redelivery_sensor(
        context: SensorEvaluationContext,
        heliox_db: HelioxDatabase,
        slack: SlackRoutes,
        heliox_settings: HelioxSettings,
    ) -> SensorResult:
        now, engine = clock.utc_now(), heliox_db.get_engine()
        rows = ledger.redeliverable(engine, now, REDELIVERY_WAIT)
        destinations = _Destinations(slack, heliox_settings.get(), engine, now)
        requests, refused, exhausted, held = redelivery_requests(
            rows, destinations.webhook, destinations.held
        )
        if exhausted:
            context.log.warning(
                f"Not retried again after {MAX_REDELIVERY_ATTEMPTS} attempts: {', '.join(exhausted)}"
            )
        skip = None
        if not requests:
            skip = "No failed alert waiting for redelivery."
            if refused:
                variables = " or ".join(sorted(destinations.variables))
                skip = (
                    f"{len(refused)} alert(s) refused by the current webhook wait for {variables} "
                    "to change (`heliox alerts` shows what to fix)."
                )
            if held:
                skip += " Held back: " + " ".join(dict.fromkeys(filter(None, map(destinations.held, held))))
        return SensorResult(run_requests=list(requests.values()), skip_reason=skip)

    return alert_redelivery_sensor


def _refresh_job(name: str) -> Any:
    return next(job for job in REFRESH_JOBS if job.name == name)


@functools.cache
def trigger_sensor(kind: AlertKind) -> SensorDefinition:
    """The sensor of an ``AfterRefresh`` trigger: the kind's job after each successful refresh."""
    trigger = kind.trigger
    assert trigger is not None, f"{kind.name} has no AfterRefresh trigger"

    @run_status_sensor(
        name=trigger.sensor_name,
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[_refresh_job(trigger.refresh_job)],
        request_job=alert_job(kind),
        default_status=RUNNING,
        description=trigger.description,
    )
    def after_refresh(
        context: RunStatusSensorContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
    ) -> RunRequest | SkipReason:
        refresh = context.dagster_run
        if refresh.tags.get(STARTED_BY_TAG) == STARTED_BY_HELIOX_RUN:
            return SkipReason(HELIOX_RUN_SKIP)
        config = trigger.config(refresh)
        if isinstance(config, str):
            return SkipReason(config)
        held = sensor_hold(kind, heliox_db.get_engine(), heliox_settings.get(), clock.utc_now(), config)
        if held is not None:
            return SkipReason(held)
        return RunRequest(
            run_key=f"{kind.name}-after:{refresh.run_id}",
            run_config=kind.run_config(**config) if config else {},
            tags=dict(trigger.tags(config)),
        )

    return after_refresh


def alert_sensors(alert_kinds: Sequence[AlertKind] | None = None) -> list[SensorDefinition]:
    """Every sensor: the fixed ones, the redelivery sensor and one per ``AfterRefresh`` trigger."""
    alert_kinds = list(alert_kinds if alert_kinds is not None else all_kinds())
    triggered = [trigger_sensor(kind) for kind in alert_kinds if kind.trigger is not None]
    return [
        redelivery_sensor(alert_kinds),
        burn_rate_sensor,
        spend_anomalies_sensor,
        stale_data_sensor,
        run_failure_slack_sensor,
        *triggered,
    ]
