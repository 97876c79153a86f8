"""Sensors: they turn successful refreshes into alert runs, watch for stale data, and report
failed runs in Slack. All run by default; the ledger keeps every alert to one message."""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import json
from dataclasses import dataclass, field

from dagster import (
    AssetCheckKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
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
from heliox_orchestration.alerts import kinds
from heliox_orchestration.alerts.jobs import burn_level, job_named
from heliox_orchestration.alerts.kinds import (
    BURN_RATE,
    DAILY_SUMMARY,
    IDLE_SPEND,
    STALE_DATA,
    burn_rate_key,
    stale_key,
)
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.assets import DAILY_COSTS_KEY
from heliox_orchestration.assets.checks import INPUT_CHECK
from heliox_orchestration.detections.freshness import cron_hours, is_stale, newest_usage_hour
from heliox_orchestration.automation.refresh_jobs import IDLE_REFRESH_JOB, SUMMARY_REFRESH_JOB
from heliox_orchestration.automation.run_config import STARTED_BY_HELIOX_RUN, STARTED_BY_TAG
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook
from heliox_orchestration.settings import Settings

# The sensors import the SQL modules (ledger, delivery, analytics: SQLAlchemy) and the Block Kit
# messages (slack-sdk) when they evaluate, so that the definitions load without them.

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


def build_sensors(
    settings: Settings, alert_jobs: list[JobDefinition], refresh_jobs: list
) -> list[SensorDefinition]:
    burn_job = job_named(alert_jobs, BURN_RATE.job_name)
    idle_job = job_named(alert_jobs, IDLE_SPEND.job_name)
    summary_job = job_named(alert_jobs, DAILY_SUMMARY.job_name)
    stale_job = job_named(alert_jobs, STALE_DATA.job_name)
    redelivery_jobs = [j for j in alert_jobs if j.name in kinds.redelivered_job_names()]
    idle_refresh = next(j for j in refresh_jobs if j.name == IDLE_REFRESH_JOB)
    summary_refresh = next(j for j in refresh_jobs if j.name == SUMMARY_REFRESH_JOB)
    checking_hours = cron_hours(settings.burn_rate_check_cron)

    @sensor(
        name="burn_rate_sensor",
        job=burn_job,
        minimum_interval_seconds=60,
        default_status=RUNNING,
        description="Alerts once per local day when today's daily_gpu_costs is over the threshold, "
        "and once more per escalation level. Past days (backfills, re-runs) never alert.",
    )
    def burn_rate_sensor(context: SensorEvaluationContext, heliox_db: HelioxDatabase) -> SensorResult:
        cursor = BurnRateCursor.parse(context.cursor)
        now = clock.utc_now()
        today = settings.today(now)
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=DAILY_COSTS_KEY, after_storage_id=cursor.after_storage_id),
            limit=EVENTS_PER_TICK,
            ascending=True,
        ).records
        today_refreshed = False
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
            today_refreshed = succeeded and checked[record.run_id]

        from heliox_orchestration.costs.summary import load_burn_rate_status

        day = today.isoformat()
        if not today_refreshed:
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
                f"{day}: ${status.cost_usd:,.2f} is within the ${status.threshold_usd:,.2f} threshold."
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

    @run_status_sensor(
        name="idle_spend_alert_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[idle_refresh],
        request_job=idle_job,
        default_status=RUNNING,
        description="After each successful idle refresh, alert on new high-severity idle GPUs.",
    )
    def idle_spend_alert_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        if context.dagster_run.tags.get(STARTED_BY_TAG) == STARTED_BY_HELIOX_RUN:
            return SkipReason(HELIOX_RUN_SKIP)
        return RunRequest(run_key=f"idle-spend-after:{context.dagster_run.run_id}")

    @run_status_sensor(
        name="daily_summary_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[summary_refresh],
        request_job=summary_job,
        default_status=RUNNING,
        description="After the morning refresh succeeds, send the daily summary of its report date.",
    )
    def daily_summary_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        tags = context.dagster_run.tags
        if tags.get(STARTED_BY_TAG) == STARTED_BY_HELIOX_RUN:
            return SkipReason(HELIOX_RUN_SKIP)
        report_date = tags.get("heliox/report_date") or tags.get("dagster/partition")
        if not report_date:
            return SkipReason("The refresh run names no report date (no partition); nothing to send.")
        return RunRequest(
            run_key=f"daily-summary-after:{context.dagster_run.run_id}",
            run_config=DAILY_SUMMARY.run_config(report_date=report_date),
            tags={"heliox/report_date": report_date},
        )

    @sensor(
        name="stale_data_sensor",
        job=stale_job,
        minimum_interval_seconds=900,
        default_status=RUNNING,
        description="During the checking hours, alerts once per gap when the newest usage is older "
        "than STALE_DATA_HOURS: a silent pipeline must not look like a cheap day.",
    )
    def stale_data_sensor(context: SensorEvaluationContext, heliox_db: HelioxDatabase) -> SensorResult:
        now = clock.utc_now()
        if now.astimezone(settings.tz).hour not in checking_hours:
            return SensorResult(skip_reason="Outside the checking hours.", cursor=context.cursor)
        newest = newest_usage_hour(heliox_db.get_engine(), now)
        if not is_stale(newest, now, settings.stale_data_hours):
            return SensorResult(
                skip_reason=f"Fresh: newest usage hour {newest:%Y-%m-%d %H:%M} UTC.", cursor=None
            )
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
        context: RunFailureSensorContext, slack: SlackWebhook, heliox_db: HelioxDatabase
    ) -> None:
        from heliox_orchestration.alerts.delivery import AlertNotDelivered
        from heliox_orchestration.alerts.run_failure import notify_run_failure

        run_id = context.dagster_run.run_id
        try:
            outcome = notify_run_failure(
                heliox_db.get_engine(), slack, context.instance, run_id, settings, clock.utc_now()
            )
        except AlertNotDelivered as exc:
            # Recorded failed in the ledger: alert_redelivery_sensor resends it (run_failure_notice_job).
            context.log.warning(f"Run-failure notice of run {run_id} not delivered: {exc}")
            return
        context.log.info(outcome if isinstance(outcome, str) else f"Run-failure notice {outcome.status}")

    @sensor(
        name="alert_redelivery_sensor",
        jobs=redelivery_jobs,
        minimum_interval_seconds=REDELIVERY_INTERVAL_SECONDS,
        default_status=RUNNING,
        description="Re-launches the job of any alert whose delivery failed, 5-6 minutes after the "
        "failure, while it is still relevant (burn rate: its day; idle: 24 h; summary: its day); "
        "an alert a webhook refused waits until SLACK_WEBHOOK_URL changes.",
    )
    def alert_redelivery_sensor(
        context: SensorEvaluationContext, heliox_db: HelioxDatabase, slack: SlackWebhook
    ) -> SensorResult:
        from heliox_orchestration.alerts import ledger

        now = clock.utc_now()
        webhook = slack.fingerprint()
        rows = ledger.redeliverable(heliox_db.get_engine(), now, REDELIVERY_WAIT)
        requests: dict[str, RunRequest] = {}
        refused, exhausted = [], []
        for row in rows:
            if row.attempts >= MAX_REDELIVERY_ATTEMPTS:
                exhausted.append(row.alert_key)
                continue
            if row.status == ledger.FAILED and webhook is not None and row.refused_webhook == webhook:
                refused.append(row.alert_key)
                continue
            request = kinds.redelivery_request(row.alert_key, row.updated_at)
            if request is not None and request.run_key:
                requests[request.run_key] = request
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

    return [
        alert_redelivery_sensor,
        burn_rate_sensor,
        idle_spend_alert_sensor,
        daily_summary_sensor,
        stale_data_sensor,
        run_failure_slack_sensor,
    ]
