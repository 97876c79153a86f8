"""Sensors: they turn successful refreshes into alert runs, watch for stale data, report failed
runs in Slack and redeliver failed alerts. All run by default; the ledger keeps every alert to
one message. The sensor of an alert kind with an ``AfterRefresh`` trigger is built from its
registry entry (``trigger_sensors``); the others are defined here once."""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
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
from heliox_orchestration.alerts.burn_rate import BURN_RATE, burn_rate_key
from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.delivery import AlertNotDelivered
from heliox_orchestration.alerts.jobs import alert_job
from heliox_orchestration.alerts.kinds import AlertKind
from heliox_orchestration.alerts.run_failure import notify_run_failure
from heliox_orchestration.alerts.stale_data import STALE_DATA, stale_key
from heliox_orchestration.assets.checks import INPUT_CHECK
from heliox_orchestration.assets.keys import DAILY_COSTS_KEY
from heliox_orchestration.assets.refresh import REFRESH_JOBS
from heliox_orchestration.automation.run_config import STARTED_BY_HELIOX_RUN, STARTED_BY_TAG
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.costs.summary import load_burn_rate_status
from heliox_orchestration.detections.burn_rate import burn_level
from heliox_orchestration.detections.freshness import cron_hours, is_stale, newest_usage_hour
from heliox_orchestration.money import format_usd
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook

RUNNING = DefaultSensorStatus.RUNNING
# Enough for an hour of refreshes and a backfill's events per tick; the rest waits a tick.
EVENTS_PER_TICK = 500
ALERTED_DAYS_KEPT = 3
HELIOX_RUN_SKIP = "The refresh was started by `heliox run`, which runs the alert job itself."

# A failed delivery is redelivered REDELIVERY_WAIT after it failed, at the first tick of a sensor
# ticking every REDELIVERY_INTERVAL_SECONDS: 5-6 minutes after the failure (an abandoned send:
# STALE_SENDING after its last sign of life, 10-11 minutes), plus the time the run takes to start.
REDELIVERY_WAIT = dt.timedelta(minutes=5)
REDELIVERY_INTERVAL_SECONDS = 60
MAX_REDELIVERY_ATTEMPTS = 24  # HTTP attempts, about six runs

DAILY_COSTS_INPUT_CHECK = AssetCheckKey(DAILY_COSTS_KEY, INPUT_CHECK)


def input_check_passed(instance: DagsterInstance, run_id: str) -> bool:
    """Did the run evaluate daily_gpu_costs' input check, and pass it? The asset refuses to
    materialize from failing rows, so this only matters for a materialization that did not come
    from the asset's op (defense in depth): no passing evaluation, no alert."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.asset_check_key == DAILY_COSTS_INPUT_CHECK:
            return evaluation.passed
    return False


@dataclass
class BurnRateCursor:
    """Where the burn-rate sensor is in the event log, and the level each recent day reached."""

    after_storage_id: int | None = None
    alerted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "BurnRateCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("after_storage_id"), {k: int(v) for k, v in data.get("alerted", {}).items()})

    def dump(self, today: dt.date) -> str:
        keep = {(today - dt.timedelta(days=n)).isoformat() for n in range(ALERTED_DAYS_KEPT)}
        alerted = {day: level for day, level in self.alerted.items() if day in keep}
        return json.dumps({"after_storage_id": self.after_storage_id, "alerted": alerted}, sort_keys=True)


def today_refreshed(context: SensorEvaluationContext, cursor: BurnRateCursor, today: dt.date) -> bool:
    """Advance ``cursor`` over the new materializations of daily_gpu_costs; True when the latest
    one of today came from a run that succeeded and whose input check passed."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=DAILY_COSTS_KEY, after_storage_id=cursor.after_storage_id),
        limit=EVENTS_PER_TICK,
        ascending=True,
    ).records
    refreshed = False
    runs: dict[str, DagsterRun | None] = {}  # a single-run backfill emits one event per day
    checked: dict[str, bool] = {}
    for record in records:
        if record.run_id not in runs:
            runs[record.run_id] = context.instance.get_run_by_id(record.run_id)
        run = runs[record.run_id]
        if run is not None and not run.is_finished:
            break  # its blocking checks have not spoken yet: look again next tick
        cursor.after_storage_id = record.storage_id
        if record.partition_key != today.isoformat():
            continue
        # The latest write of today decides: only the numbers of a run that succeeded and
        # whose input check passed may alert (a failed run's numbers never do).
        succeeded = run is not None and run.status == DagsterRunStatus.SUCCESS
        if succeeded and record.run_id not in checked:
            checked[record.run_id] = input_check_passed(context.instance, record.run_id)
        refreshed = succeeded and checked[record.run_id]
    return refreshed


# Every 15 s: one cheap event-log query per tick, and a refresh that lands today's usage (an
# import, through new_usage_sensor) reaches Slack well inside 90 s.
BURN_RATE_INTERVAL_SECONDS = 15


@sensor(
    name="burn_rate_sensor",
    job=alert_job(BURN_RATE),
    minimum_interval_seconds=BURN_RATE_INTERVAL_SECONDS,
    default_status=RUNNING,
    description="Alerts once per local day when today's daily_gpu_costs is over the threshold, "
    "and once more per escalation level. Past days (backfills, re-runs) never alert.",
)
def burn_rate_sensor(
    context: SensorEvaluationContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> SensorResult:
    settings = heliox_settings.get()
    cursor = BurnRateCursor.parse(context.cursor)
    now = clock.utc_now()
    today = settings.today(now)
    day = today.isoformat()
    if not today_refreshed(context, cursor, today):
        return SensorResult(
            skip_reason=f"No new successful, checked refresh of today's daily_gpu_costs ({day}).",
            cursor=cursor.dump(today),
        )
    try:
        status = load_burn_rate_status(heliox_db.get_engine(), today, settings, now)
    except NotMaterializedError:
        return SensorResult(skip_reason=f"{day} is not materialized.", cursor=cursor.dump(today))
    level = burn_level(status.cost_usd, status.threshold_usd, settings.burn_rate_escalation_pct)
    if level is None or level <= cursor.alerted.get(day, 0):
        reason = (
            f"{day}: {format_usd(status.cost_usd)} is within the "
            f"{format_usd(status.threshold_usd)} threshold."
            if level is None
            else f"{day}: already alerted at {cursor.alerted[day]}% of the threshold."
        )
        return SensorResult(skip_reason=reason, cursor=cursor.dump(today))
    cursor.alerted[day] = level
    request = RunRequest(
        run_key=burn_rate_key(today, level),
        run_config=BURN_RATE.run_config(day=day),
        tags={"heliox/day": day, "heliox/level_pct": str(level)},
    )
    return SensorResult(run_requests=[request], cursor=cursor.dump(today))


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
    newest_text = newest.isoformat() if newest else None
    request = RunRequest(run_key=key, run_config=STALE_DATA.run_config(newest_usage_hour=newest_text))
    return SensorResult(run_requests=[request], cursor=key)


@run_failure_sensor(
    name="run_failure_slack_sensor",
    default_status=RUNNING,
    description="Posts a short Slack message for a failed Heliox run, once; none when the run's "
    "alert was delivered or its Slack failure is already tracked in the alert ledger.",
)
def run_failure_slack_sensor(
    context: RunFailureSensorContext,
    slack: SlackWebhook,
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
    rows: Sequence, webhook: str | None
) -> tuple[dict[str, RunRequest], list[str], list[str]]:
    """The runs that redeliver the ``ledger.redeliverable`` rows, one per kind's scope; and the
    keys a webhook refused (they wait for another one) and those out of attempts."""
    requests: dict[str, RunRequest] = {}
    refused, exhausted = [], []
    for row in rows:
        if row.attempts >= MAX_REDELIVERY_ATTEMPTS:
            exhausted.append(row.alert_key)
        elif row.status == ledger.FAILED and webhook is not None and row.refused_webhook == webhook:
            refused.append(row.alert_key)
        elif (request := kinds.redelivery_request(row.alert_key, row.updated_at)) and request.run_key:
            requests[request.run_key] = request
    return requests, refused, exhausted


def redelivery_sensor(alert_kinds: Sequence[AlertKind]) -> SensorDefinition:
    """The sensor that relaunches the job of any alert whose delivery failed, for these kinds."""

    @sensor(
        name="alert_redelivery_sensor",
        jobs=[alert_job(kind) for kind in alert_kinds if kind.redelivered],
        minimum_interval_seconds=REDELIVERY_INTERVAL_SECONDS,
        default_status=RUNNING,
        description="Re-launches the job of any alert whose delivery failed, 5-6 minutes after the "
        "failure, while it is still relevant (burn rate: its day; idle: 24 h; summary: its day); "
        "an alert a webhook refused waits until SLACK_WEBHOOK_URL changes.",
    )
    def alert_redelivery_sensor(
        context: SensorEvaluationContext, heliox_db: HelioxDatabase, slack: SlackWebhook
    ) -> SensorResult:
        rows = ledger.redeliverable(heliox_db.get_engine(), clock.utc_now(), REDELIVERY_WAIT)
        requests, refused, exhausted = redelivery_requests(rows, slack.fingerprint())
        if exhausted:
            context.log.warning(
                f"Not retried again after {MAX_REDELIVERY_ATTEMPTS} attempts: {', '.join(exhausted)}"
            )
        skip = None
        if not requests:
            skip = "No failed alert waiting for redelivery."
            if refused:
                skip = (
                    f"{len(refused)} alert(s) refused by the current webhook wait for {WEBHOOK_URL_VAR} "
                    "to change (`heliox alerts` shows what to fix)."
                )
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
    def after_refresh(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        refresh = context.dagster_run
        if refresh.tags.get(STARTED_BY_TAG) == STARTED_BY_HELIOX_RUN:
            return SkipReason(HELIOX_RUN_SKIP)
        config = trigger.config(refresh)
        if isinstance(config, str):
            return SkipReason(config)
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
        stale_data_sensor,
        run_failure_slack_sensor,
        *triggered,
    ]
