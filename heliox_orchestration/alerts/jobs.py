"""The alert jobs: ops that read the materialized cost assets and send Slack messages.

Each op computes its message with plain functions (analytics, messages), then hands it to
``delivery``, which claims the alert's ledger keys so that nothing is sent twice. Alert runs
carry the spec's 5-minute limit (``dagster/max_runtime``, enforced by run monitoring) and a retry
policy for transient failures; Slack's permanent refusals are not retried.
"""

# No `from __future__ import annotations`: Dagster inspects the op signatures' real types.

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from dagster import (
    Backoff,
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    RetryPolicy,
    job,
    op,
)
from pydantic import Field

from heliox_orchestration import clock
from heliox_orchestration.alerts.kinds import (
    ALERT_KEYS_METADATA,
    BURN_RATE,
    DAILY_SUMMARY,
    IDLE_SPEND,
    RUN_FAILURE,
    SLACK_DELIVERY_METADATA,
    STALE_DATA,
    AlertKind,
    burn_rate_key,
    idle_key,
    idle_key_prefix,
    stale_key,
    summary_key,
)
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.partitions import parse_day
from heliox_orchestration.reports import IdleSpendReport
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook
from heliox_orchestration.settings import Settings

# The ops import the SQL modules (ledger, delivery, analytics: SQLAlchemy) and the Block Kit
# messages (slack-sdk) when they run, so that the definitions load without them.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from heliox_orchestration.alerts.delivery import (
        AlertNotDelivered,
        Delivery,
        LedgerIncomplete,
        MessageFor,
    )

ALERT_MAX_RUNTIME_SECONDS = 300
ALERT_RETRY_POLICY = RetryPolicy(max_retries=2, delay=20, backoff=Backoff.EXPONENTIAL)


def alert_tags(kind: str) -> dict[str, str]:
    # heliox/alert: the UI's run filter by alert kind. No concurrency limit uses it: the ledger
    # keeps racing runs to one message (deploy/dagster.yaml).
    return {"dagster/max_runtime": str(ALERT_MAX_RUNTIME_SECONDS), "heliox/alert": kind}


# --- levels (plain functions) ---------------------------------------------------------------


def burn_level(cost: Decimal, threshold: Decimal, escalation_pct: Iterable[int]) -> int | None:
    """The highest alert level crossed: 100 (the threshold), then each escalation percent."""
    crossed = [level for level in (100, *escalation_pct) if cost > threshold * level / 100]
    return max(crossed) if crossed else None


# --- Dagster wiring --------------------------------------------------------------------------


class BurnRateAlertConfig(Config):
    day: str | None = Field(default=None, description="Local day YYYY-MM-DD. Default: today in TIMEZONE.")


class DailySummaryAlertConfig(Config):
    report_date: str | None = Field(
        default=None, description="The day the summary is about (YYYY-MM-DD). Default: yesterday."
    )


class StaleDataAlertConfig(Config):
    newest_usage_hour: str | None = Field(
        default=None, description="ISO instant of the newest usage hour; empty when there is none."
    )


class RunFailureNoticeConfig(Config):
    run_id: str = Field(description="The failed run whose notice is (re)sent.")


def _report(context: OpExecutionContext, delivery: "Delivery", **extra: object) -> None:
    metadata: dict[str, object] = {
        "delivery": delivery.status,
        "alert_keys": MetadataValue.json(list(delivery.keys)),
        "skipped_keys": MetadataValue.json(list(delivery.skipped_keys)),
        "late": delivery.late,
        "possible_repeat": delivery.possible_repeat,
        **extra,
    }
    if delivery.result is not None:
        metadata.update(delivery.result.to_metadata())
        context.log.info(f"Alert {delivery.status}: {', '.join(delivery.keys)}")
    else:
        context.log.info(
            "Nothing sent: already delivered, being delivered by another run, or no longer relevant "
            f"({', '.join(delivery.skipped_keys)})"
        )
    context.add_output_metadata(metadata)


def _not_materialized(exc: NotMaterializedError) -> Failure:
    return Failure(f"Cannot alert: {exc}", allow_retries=False)


def _slack_failure(exc: "AlertNotDelivered", kind: AlertKind) -> Failure:
    """The Slack resource has already retried; the run fails visibly and the redelivery sensor
    sends the alert again while it is relevant, so the op does not retry. A permanent refusal
    waits for another webhook."""
    if exc.refused:
        then = (
            f"it is not sent to this webhook again; once {WEBHOOK_URL_VAR} is fixed it goes out "
            f"while still relevant ({kind.relevance}). `heliox alerts` shows it as refused"
        )
    else:
        then = f"alert_redelivery_sensor sends it again in 5-6 minutes, while relevant ({kind.relevance})"
    return Failure(
        f"{exc} Then: {then}.",
        allow_retries=False,
        metadata={
            "http_status": exc.http_status,
            "attempts": exc.attempts,
            SLACK_DELIVERY_METADATA: "refused" if exc.refused else "failed",
            ALERT_KEYS_METADATA: MetadataValue.json(list(exc.keys)),
        },
    )


def _ledger_failure(exc: "LedgerIncomplete", names: Mapping[str, str]) -> Failure:
    """Some keys could not be claimed (their finding was not sent) or recorded (sent, left
    ``sending``: a later run may repeat it, saying so). The others went out and are recorded."""
    not_sent = [f for f in exc.failures if f.stage == "claim"]
    unrecorded = [f for f in exc.failures if f.stage == "record"]
    parts = []
    if not_sent:
        parts.append("not sent: " + "; ".join(f"{names.get(f.key, f.key)} ({f.error})" for f in not_sent))
    if unrecorded:
        parts.append(
            "sent but not recorded, may be repeated with a warning: "
            + "; ".join(f"{names.get(f.key, f.key)} ({f.error})" for f in unrecorded)
        )
    done = len(exc.delivery.keys) - len(unrecorded)
    return Failure(
        f"The alert ledger refused {len(exc.failures)} alert key(s), {'; '.join(parts)}. "
        f"The other {done} key(s) were {exc.delivery.status} and recorded.",
        allow_retries=False,
        metadata={"failed_keys": MetadataValue.json([f.key for f in exc.failures])},
    )


def _deliver(
    context: OpExecutionContext,
    kind: AlertKind,
    engine: "Engine",
    slack: SlackWebhook,
    keys: Sequence[str],
    message: "MessageFor",
    *,
    now: dt.datetime,
    timezone: str,
    names: Mapping[str, str] | None = None,
) -> "Delivery":
    """``delivery.deliver`` for ``kind``, with its failures turned into the op's Failure."""
    from heliox_orchestration.alerts.delivery import AlertNotDelivered, LedgerIncomplete, deliver

    try:
        return deliver(
            engine,
            slack,
            keys,
            message,
            alert_type=kind.name,
            relevant_until=kind.relevant_until(kind.parse(keys[0]), now, timezone),
            now=now,
            timezone=timezone,
            run_id=context.run_id,
        )
    except AlertNotDelivered as exc:
        raise _slack_failure(exc, kind) from None
    except LedgerIncomplete as exc:
        raise _ledger_failure(exc, names or {}) from None


def build_alert_jobs(settings: Settings) -> list[JobDefinition]:
    tz = settings.timezone

    @op(name=BURN_RATE.op_name, retry_policy=ALERT_RETRY_POLICY)
    def send_burn_rate_alert(
        context: OpExecutionContext,
        config: BurnRateAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Alert when the day's materialized GPU spend is over the threshold (or a further level)."""
        from heliox_orchestration.alerts import ledger
        from heliox_orchestration.alerts.messages import burn_rate_message, with_note
        from heliox_orchestration.costs.summary import load_burn_rate_status

        now = clock.utc_now()
        day = parse_day(config.day, "day") or settings.today(now)
        engine = heliox_db.get_engine()
        try:
            status = load_burn_rate_status(engine, day, settings, now)
        except NotMaterializedError as exc:
            raise _not_materialized(exc) from None
        level = burn_level(status.cost_usd, status.threshold_usd, settings.burn_rate_escalation_pct)
        if level is None:
            expired = ledger.expire(engine, ledger.failed_keys(engine, BURN_RATE.prefix(day), now), now)
            context.log.info(f"{day}: ${status.cost_usd:,.2f} is within the threshold; nothing to send")
            context.add_output_metadata({"delivery": "within threshold", "expired_failed_keys": expired})
            return
        message = burn_rate_message(status, dashboard_url=settings.dashboard_url)
        if level > 100:
            message = with_note(message, f"📈 Escalation: spend has passed {level}% of the threshold")
        # The day has passed every level up to this one: this message also stands for any of them
        # never sent (a jump past several levels, or an earlier level whose delivery failed).
        levels = [lvl for lvl in (100, *settings.burn_rate_escalation_pct) if lvl <= level]
        keys = [burn_rate_key(day, lvl) for lvl in reversed(levels)]
        delivery = _deliver(context, BURN_RATE, engine, slack, keys, message, now=now, timezone=tz)
        _report(context, delivery, level_pct=level)

    @op(name=IDLE_SPEND.op_name, retry_policy=ALERT_RETRY_POLICY)
    def send_idle_spend_alert(
        context: OpExecutionContext, heliox_db: HelioxDatabase, slack: SlackWebhook
    ) -> None:
        """Alert on high-severity idle GPUs not alerted in the last IDLE_REALERT_DAYS days."""
        from heliox_orchestration.alerts import ledger
        from heliox_orchestration.alerts.messages import SlackMessage, idle_spend_message
        from heliox_orchestration.detections.idle import load_idle_spend_report

        now = clock.utc_now()
        engine = heliox_db.get_engine()
        try:
            report = load_idle_spend_report(engine, severities=("high",))
        except NotMaterializedError as exc:
            raise _not_materialized(exc) from None
        failed = ledger.failed_keys(engine, IDLE_SPEND.prefix(), now)
        by_prefix = {idle_key_prefix(f.resource_id): f for f in report.findings}
        # A failed alert whose finding went away is no longer relevant.
        ledger.expire(engine, [k for k in failed if IDLE_SPEND.prefix_of(k) not in by_prefix], now)
        recent = ledger.recently_sent(
            engine, list(by_prefix), since=now - dt.timedelta(days=settings.idle_realert_days)
        )
        fresh = [f for prefix, f in by_prefix.items() if prefix not in recent]
        if not fresh:
            context.log.info(
                f"Nothing new: {len(report.findings)} high-severity findings, all alerted recently"
            )
            context.add_output_metadata({"delivery": "nothing new", "open_findings": len(report.findings)})
            return
        today = settings.today(now)
        keys = {idle_key(f.resource_id, today): f for f in fresh}
        # An earlier week's failed delivery of a finding goes out with this week's alert.
        keys.update({k: by_prefix[p] for k in failed if (p := IDLE_SPEND.prefix_of(k)) in by_prefix})

        def message(won: Sequence[str]) -> SlackMessage:
            claimed = {keys[k] for k in won}
            findings = tuple(f for f in fresh if f in claimed)
            idle = IdleSpendReport(report.as_of, findings, report.withheld)
            return idle_spend_message(idle, dashboard_url=settings.dashboard_url)

        names = {k: f"resource {f.resource_id}" for k, f in keys.items()}
        delivery = _deliver(
            context, IDLE_SPEND, engine, slack, list(keys), message, now=now, timezone=tz, names=names
        )
        _report(context, delivery, findings=len({keys[k] for k in delivery.keys} & set(fresh)))

    @op(name=DAILY_SUMMARY.op_name, retry_policy=ALERT_RETRY_POLICY)
    def send_daily_summary(
        context: OpExecutionContext,
        config: DailySummaryAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Send the 📊 daily summary of the materialized gpu_cost_summary of a report date."""
        from heliox_orchestration.alerts.messages import daily_summary_message
        from heliox_orchestration.costs.summary import load_cost_summary

        now = clock.utc_now()
        report_date = parse_day(config.report_date, "report_date") or settings.today(now) - dt.timedelta(
            days=1
        )
        engine = heliox_db.get_engine()
        try:
            summary = load_cost_summary(engine, report_date)
        except NotMaterializedError as exc:
            raise _not_materialized(exc) from None
        message = daily_summary_message(summary, dashboard_url=settings.dashboard_url)
        keys = [summary_key(report_date)]
        delivery = _deliver(context, DAILY_SUMMARY, engine, slack, keys, message, now=now, timezone=tz)
        _report(context, delivery, report_date=report_date.isoformat())

    @op(name=STALE_DATA.op_name, retry_policy=ALERT_RETRY_POLICY)
    def send_stale_data_alert(
        context: OpExecutionContext,
        config: StaleDataAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Say in Slack that cost data stopped arriving: one alert per gap."""
        from heliox_orchestration.alerts.messages import stale_data_message

        now = clock.utc_now()
        newest = dt.datetime.fromisoformat(config.newest_usage_hour) if config.newest_usage_hour else None
        message = stale_data_message(newest, now, settings.stale_data_hours, tz)
        keys = [stale_key(newest)]
        delivery = _deliver(
            context, STALE_DATA, heliox_db.get_engine(), slack, keys, message, now=now, timezone=tz
        )
        _report(context, delivery)

    @op(name=RUN_FAILURE.op_name, retry_policy=ALERT_RETRY_POLICY)
    def send_run_failure_notice(
        context: OpExecutionContext,
        config: RunFailureNoticeConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Send (again) the 🚨 notice of a failed run, rebuilt from the run's events."""
        from heliox_orchestration.alerts.delivery import AlertNotDelivered
        from heliox_orchestration.alerts.run_failure import notify_run_failure

        try:
            outcome = notify_run_failure(
                heliox_db.get_engine(),
                slack,
                context.instance,
                config.run_id,
                settings,
                clock.utc_now(),
                sender_run_id=context.run_id,
            )
        except AlertNotDelivered as exc:
            raise _slack_failure(exc, RUN_FAILURE) from None
        if isinstance(outcome, str):
            context.log.info(outcome)
            context.add_output_metadata({"delivery": "no notice"})
        else:
            _report(context, outcome, failed_run_id=config.run_id)

    @job(name=BURN_RATE.job_name, tags=alert_tags(BURN_RATE.name))
    def burn_rate_alert_job() -> None:
        """🔥 High Burn Rate Alert for a local day (launched by the burn-rate sensor)."""
        send_burn_rate_alert()

    @job(name=IDLE_SPEND.job_name, tags=alert_tags(IDLE_SPEND.name))
    def idle_spend_alert_job() -> None:
        """⚠️ Idle GPU Spend Detected, for new high-severity findings (after each idle refresh)."""
        send_idle_spend_alert()

    @job(name=DAILY_SUMMARY.job_name, tags=alert_tags(DAILY_SUMMARY.name))
    def daily_summary_job() -> None:
        """📊 Heliox Daily Summary of a report date (after the morning refresh)."""
        send_daily_summary()

    @job(name=STALE_DATA.job_name, tags=alert_tags(STALE_DATA.name))
    def stale_data_alert_job() -> None:
        """⏳ GPU cost data is stale (launched by the stale-data sensor)."""
        send_stale_data_alert()

    @job(name=RUN_FAILURE.job_name, tags=alert_tags(RUN_FAILURE.name))
    def run_failure_notice_job() -> None:
        """🚨 Resends a run-failure notice Slack did not take (launched by the redelivery sensor)."""
        send_run_failure_notice()

    return [
        burn_rate_alert_job,
        idle_spend_alert_job,
        daily_summary_job,
        stale_data_alert_job,
        run_failure_notice_job,
    ]


def job_named(jobs: Sequence[JobDefinition], name: str) -> JobDefinition:
    return next(j for j in jobs if j.name == name)
