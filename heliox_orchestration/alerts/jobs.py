"""The alert jobs: ops that read the materialized cost assets and send Slack messages.

Each op computes its message with plain functions (analytics, messages), then hands it to
``delivery``, which claims the alert's ledger keys so that nothing is sent twice. Alert runs
carry the spec's 5-minute limit (``dagster/max_runtime``, enforced by run monitoring) and a retry
policy for transient failures; Slack's permanent refusals are not retried.
"""

# No `from __future__ import annotations`: Dagster inspects the op signatures' real types.

import datetime as dt
from collections.abc import Iterable, Sequence
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
from heliox_orchestration.analytics.common import NotMaterializedError
from heliox_orchestration.partitions import local_day_bounds, parse_day
from heliox_orchestration.reports import IdleSpendReport
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.slack import SlackDeliveryError, SlackWebhook
from heliox_orchestration.settings import Settings

# The ops import the SQL modules (ledger, delivery, analytics: SQLAlchemy) and the Block Kit
# messages (slack-sdk) when they run, so that the definitions load without them.
if TYPE_CHECKING:
    from heliox_orchestration.alerts.delivery import Delivery

ALERT_MAX_RUNTIME_SECONDS = 300
ALERT_RETRY_POLICY = RetryPolicy(max_retries=2, delay=20, backoff=Backoff.EXPONENTIAL)


def alert_tags(kind: str) -> dict[str, str]:
    # heliox/alert: the UI's run filter by alert kind. No concurrency limit uses it: the ledger
    # keeps racing runs to one message (deploy/dagster.yaml).
    return {"dagster/max_runtime": str(ALERT_MAX_RUNTIME_SECONDS), "heliox/alert": kind}


# --- keys and levels (plain functions) -------------------------------------------------------


def burn_level(cost: Decimal, threshold: Decimal, escalation_pct: Iterable[int]) -> int | None:
    """The highest alert level crossed: 100 (the threshold), then each escalation percent."""
    crossed = [level for level in (100, *escalation_pct) if cost > threshold * level / 100]
    return max(crossed) if crossed else None


def burn_rate_key(day: dt.date, level: int) -> str:
    return f"burn-rate:{day.isoformat()}:{level}"


def idle_key_prefix(resource_id: str) -> str:
    return f"idle-spend:{resource_id}:"


def idle_prefix_of(key: str) -> str:
    return key[: key.rindex(":") + 1]


def idle_key(resource_id: str, local_day: dt.date) -> str:
    year, week, _ = local_day.isocalendar()
    return f"{idle_key_prefix(resource_id)}{year}-W{week:02d}"


def summary_key(report_date: dt.date) -> str:
    return f"daily-summary:{report_date.isoformat()}"


def stale_key(newest_usage_hour: dt.datetime | None) -> str:
    return f"stale-data:{newest_usage_hour.isoformat() if newest_usage_hour else 'no-data'}"


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


def _report(context: OpExecutionContext, delivery: "Delivery", **extra: object) -> None:
    metadata: dict[str, object] = {
        "delivery": delivery.status,
        "alert_keys": MetadataValue.json(list(delivery.keys)),
        "skipped_keys": MetadataValue.json(list(delivery.skipped_keys)),
        "late": delivery.late,
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


def _slack_failure(exc: SlackDeliveryError) -> Failure:
    """The Slack resource has already retried; the run fails visibly and the redelivery sensor
    (or the next tick) sends the alert again while it is relevant, so the op does not retry."""
    return Failure(
        str(exc), allow_retries=False, metadata={"http_status": exc.http_status, "attempts": exc.attempts}
    )


def build_alert_jobs(settings: Settings) -> list[JobDefinition]:
    tz = settings.timezone

    @op(retry_policy=ALERT_RETRY_POLICY)
    def send_burn_rate_alert(
        context: OpExecutionContext,
        config: BurnRateAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Alert when the day's materialized GPU spend is over the threshold (or a further level)."""
        from heliox_orchestration.alerts import ledger
        from heliox_orchestration.alerts.delivery import deliver
        from heliox_orchestration.alerts.messages import burn_rate_message, with_note
        from heliox_orchestration.analytics.summary import load_burn_rate_status

        now = clock.utc_now()
        day = parse_day(config.day, "day") or settings.today(now)
        engine = heliox_db.get_engine()
        try:
            status = load_burn_rate_status(engine, day, settings, now)
        except NotMaterializedError as exc:
            raise _not_materialized(exc) from None
        level = burn_level(status.cost_usd, status.threshold_usd, settings.burn_rate_escalation_pct)
        if level is None:
            expired = ledger.expire(engine, ledger.failed_keys(engine, f"burn-rate:{day}:", now), now)
            context.log.info(f"{day}: ${status.cost_usd:,.2f} is within the threshold; nothing to send")
            context.add_output_metadata({"delivery": "within threshold", "expired_failed_keys": expired})
            return
        message = burn_rate_message(status, dashboard_url=settings.dashboard_url)
        if level > 100:
            message = with_note(message, f"📈 Escalation: spend has passed {level}% of the threshold")
        # The day has passed every level up to this one: this message also stands for any of them
        # never sent (a jump past several levels, or an earlier level whose delivery failed).
        levels = [lvl for lvl in (100, *settings.burn_rate_escalation_pct) if lvl <= level]
        try:
            delivery = deliver(
                engine,
                slack,
                [burn_rate_key(day, lvl) for lvl in reversed(levels)],
                message,
                alert_type="burn-rate",
                relevant_until=local_day_bounds(day, tz)[1],
                now=now,
                timezone=tz,
                run_id=context.run_id,
            )
        except SlackDeliveryError as exc:
            raise _slack_failure(exc) from None
        _report(context, delivery, level_pct=level)

    @op(retry_policy=ALERT_RETRY_POLICY)
    def send_idle_spend_alert(
        context: OpExecutionContext, heliox_db: HelioxDatabase, slack: SlackWebhook
    ) -> None:
        """Alert on high-severity idle GPUs not alerted in the last IDLE_REALERT_DAYS days."""
        from heliox_orchestration.alerts import ledger
        from heliox_orchestration.alerts.delivery import Delivery, claim_keys, send_claimed
        from heliox_orchestration.alerts.messages import idle_spend_message
        from heliox_orchestration.analytics.idle import load_idle_spend_report

        now = clock.utc_now()
        engine = heliox_db.get_engine()
        try:
            report = load_idle_spend_report(engine, severities=("high",))
        except NotMaterializedError as exc:
            raise _not_materialized(exc) from None
        failed = ledger.failed_keys(engine, "idle-spend:", now)
        by_prefix = {idle_key_prefix(f.resource_id): f for f in report.findings}
        # A failed alert whose finding went away is no longer relevant.
        ledger.expire(engine, [k for k in failed if idle_prefix_of(k) not in by_prefix], now)
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
        keys.update({k: by_prefix[idle_prefix_of(k)] for k in failed if idle_prefix_of(k) in by_prefix})
        claims = claim_keys(
            engine,
            list(keys),
            alert_type="idle-spend",
            relevant_until=now + dt.timedelta(hours=24),
            now=now,
            run_id=context.run_id,
            live=slack.resolved_url() is not None,
        )
        if not claims:
            _report(context, Delivery(keys=(), skipped_keys=tuple(keys), result=None))
            return
        claimed = {keys[c.key] for c in claims}
        findings = tuple(f for f in fresh if f in claimed)
        message = idle_spend_message(
            IdleSpendReport(report.as_of, findings), dashboard_url=settings.dashboard_url
        )
        try:
            result, late = send_claimed(engine, slack, claims, message, now=now, timezone=tz)
        except SlackDeliveryError as exc:
            raise _slack_failure(exc) from None
        won = tuple(c.key for c in claims)
        skipped = tuple(k for k in keys if k not in won)
        _report(context, Delivery(won, skipped, result, late), findings=len(findings))

    @op(retry_policy=ALERT_RETRY_POLICY)
    def send_daily_summary(
        context: OpExecutionContext,
        config: DailySummaryAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Send the 📊 daily summary of the materialized gpu_cost_summary of a report date."""
        from heliox_orchestration.alerts.delivery import deliver
        from heliox_orchestration.alerts.messages import daily_summary_message
        from heliox_orchestration.analytics.summary import load_cost_summary

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
        try:
            delivery = deliver(
                engine,
                slack,
                [summary_key(report_date)],
                message,
                alert_type="daily-summary",
                relevant_until=local_day_bounds(report_date + dt.timedelta(days=1), tz)[1],
                now=now,
                timezone=tz,
                run_id=context.run_id,
            )
        except SlackDeliveryError as exc:
            raise _slack_failure(exc) from None
        _report(context, delivery, report_date=report_date.isoformat())

    @op(retry_policy=ALERT_RETRY_POLICY)
    def send_stale_data_alert(
        context: OpExecutionContext,
        config: StaleDataAlertConfig,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        """Say in Slack that cost data stopped arriving: one alert per gap."""
        from heliox_orchestration.alerts.delivery import deliver
        from heliox_orchestration.alerts.messages import stale_data_message

        now = clock.utc_now()
        newest = dt.datetime.fromisoformat(config.newest_usage_hour) if config.newest_usage_hour else None
        message = stale_data_message(newest, now, settings.stale_data_hours, tz)
        try:
            delivery = deliver(
                heliox_db.get_engine(),
                slack,
                [stale_key(newest)],
                message,
                alert_type="stale-data",
                relevant_until=now + dt.timedelta(hours=24),
                now=now,
                timezone=tz,
                run_id=context.run_id,
            )
        except SlackDeliveryError as exc:
            raise _slack_failure(exc) from None
        _report(context, delivery)

    @job(name="burn_rate_alert_job", tags=alert_tags("burn-rate"))
    def burn_rate_alert_job() -> None:
        """🔥 High Burn Rate Alert for a local day (launched by the burn-rate sensor)."""
        send_burn_rate_alert()

    @job(name="idle_spend_alert_job", tags=alert_tags("idle-spend"))
    def idle_spend_alert_job() -> None:
        """⚠️ Idle GPU Spend Detected, for new high-severity findings (after each idle refresh)."""
        send_idle_spend_alert()

    @job(name="daily_summary_job", tags=alert_tags("daily-summary"))
    def daily_summary_job() -> None:
        """📊 Heliox Daily Summary of a report date (after the morning refresh)."""
        send_daily_summary()

    @job(name="stale_data_alert_job", tags=alert_tags("stale-data"))
    def stale_data_alert_job() -> None:
        """⏳ GPU cost data is stale (launched by the stale-data sensor)."""
        send_stale_data_alert()

    return [burn_rate_alert_job, idle_spend_alert_job, daily_summary_job, stale_data_alert_job]


def job_named(jobs: Sequence[JobDefinition], name: str) -> JobDefinition:
    return next(j for j in jobs if j.name == name)
