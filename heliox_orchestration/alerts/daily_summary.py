"""📊 Heliox Daily Summary of a report date (yesterday, from the reader's view), sent after the
morning refresh of that date's ``gpu_cost_summary`` partition."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from dagster import Config, DagsterRun
from pydantic import Field
from sqlalchemy import Engine

from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection
from heliox_orchestration.alerts.kinds import (
    AfterRefresh,
    AlertKind,
    KeyField,
    ManualRun,
    end_of_day,
    register,
)
from heliox_orchestration.alerts.messages import daily_summary_message
from heliox_orchestration.alerts.preview import Preview, blocked
from heliox_orchestration.assets.refresh import SUMMARY_REFRESH_JOB
from heliox_orchestration.costs.quality import days_text, usage_rule_report
from heliox_orchestration.costs.summary import cost_summary, load_cost_summary, summary_range
from heliox_orchestration.detections.resolution import realized_savings
from heliox_orchestration.partitions import PARTITION_TAG, local_range_bounds, parse_day
from heliox_orchestration.reports import CostSummary
from heliox_orchestration.settings import Settings


class DailySummaryAlertConfig(Config):
    report_date: str | None = Field(
        default=None, description="The day the summary is about (YYYY-MM-DD). Default: yesterday."
    )


def detect_daily_summary(run: AlertRun) -> Detection:
    assert isinstance(run.config, DailySummaryAlertConfig)
    report_date = parse_day(run.config.report_date, "report_date") or run.settings.yesterday(run.now)
    summary = with_realized_savings(run.engine, load_cost_summary(run.engine, report_date), run.settings)
    message = daily_summary_message(summary, dashboard_url=run.settings.dashboard_url)
    return Detection(
        [Alert([summary_key(report_date)], message)], metadata={"report_date": report_date.isoformat()}
    )


def with_realized_savings(engine: Engine, summary: CostSummary, settings: Settings) -> CostSummary:
    """The summary with the savings realized this month (``detections/resolution.py``)."""
    realized = realized_savings(engine, summary.report_date, settings.timezone)
    return replace(summary, savings_realized_month_usd=realized.amount_usd)


def preview_daily_summary(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    """The summary the job sends on ``run_date``: the day before, at ``DAILY_SUMMARY_HOUR``."""
    report_date = run_date - dt.timedelta(days=1)
    first, last = summary_range(report_date)
    tz = settings.timezone
    checked = usage_rule_report(
        engine, *local_range_bounds(first, last, tz), max_hourly_cost=settings.max_hourly_cost_usd, now=now
    )
    if not checked.passed:
        return blocked(
            checked, f"gpu_cost_summary of {report_date} would not be written", days_text(first, last, tz)
        )
    scheduled = dt.datetime.combine(run_date, dt.time(settings.daily_summary_hour), settings.tz)
    summary = cost_summary(engine, report_date, settings, as_of=min(now, scheduled.astimezone(dt.UTC)))
    summary = with_realized_savings(engine, summary, settings)
    message = daily_summary_message(summary, dashboard_url=settings.dashboard_url)
    return Preview(message, True, f"the daily summary of {report_date}, sent every day")


def _report_date_of(refresh: DagsterRun) -> dict[str, object] | str:
    report_date = refresh.tags.get(PARTITION_TAG)
    if not report_date:
        return "The refresh run names no report date (no partition); nothing to send."
    return {"report_date": report_date}


def _yesterday(settings: Settings, now: dt.datetime) -> str:
    return settings.yesterday(now).isoformat()


DAILY_SUMMARY = register(
    AlertKind(
        name="daily-summary",
        job_name="daily_summary_job",
        op_name="send_daily_summary",
        description="📊 Heliox Daily Summary of a report date (after the morning refresh).",
        fields=(KeyField("report_date", 10),),
        relevance="the local day after its report date",
        relevant_until=end_of_day("report_date", days_after=1),
        detect=detect_daily_summary,
        config=DailySummaryAlertConfig,
        trigger=AfterRefresh(
            sensor_name="daily_summary_sensor",
            refresh_job=SUMMARY_REFRESH_JOB,
            description="After the morning refresh succeeds, send the daily summary of its report date.",
            config=_report_date_of,
            tags=lambda config: {"heliox/report_date": str(config["report_date"])},
        ),
        manual=ManualRun(
            SUMMARY_REFRESH_JOB,
            partition=_yesterday,
            config=lambda s, now: {"report_date": _yesterday(s, now)},
        ),
        preview=preview_daily_summary,
        redelivery_config=lambda f: {"report_date": f["report_date"]},
        redelivery_scope=lambda f: f["report_date"],
    )
)


def summary_key(report_date: dt.date) -> str:
    return DAILY_SUMMARY.key(report_date.isoformat())
