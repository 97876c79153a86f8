"""``heliox preview``: a message computed from the Heliox database as its job would on a date.

``run_date`` is the day the job runs: burn-rate looks at that day's spend, the daily summary
reports the day before it at ``DAILY_SUMMARY_HOUR``, idle-spend evaluates as of the end of that
day (or now, for today). Nothing is materialized and nothing is sent.

The preview applies the data-quality rules the job's assets apply, to the same rows, before it
computes anything: where the job would be blocked, the preview says so (the rule, the counts,
example rows and what to fix) and shows no message, because there is none the job could send.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine

from heliox_orchestration.alerts.formatting import money, plural
from heliox_orchestration.alerts.messages import (
    SlackMessage,
    burn_rate_message,
    daily_summary_message,
    idle_spend_message,
)
from heliox_orchestration.detections.idle import idle_spend_report
from heliox_orchestration.costs.quality import RuleReport, days_text, usage_rule_report
from heliox_orchestration.costs.summary import burn_rate_status, cost_summary, summary_range
from heliox_orchestration.partitions import local_day_bounds, local_range_bounds
from heliox_orchestration.settings import Settings

PREVIEW_KINDS = ("burn-rate", "idle-spend", "daily-summary")


@dataclass(frozen=True)
class Preview:
    message: SlackMessage | None  # None: the job would be blocked, so there is no message
    would_send: bool  # False: nothing crosses a threshold, or the job would be blocked
    note: str  # one line on what the job would do

    @property
    def blocked(self) -> bool:
        return self.message is None


def _blocked(report: RuleReport, what: str, scope: str) -> Preview:
    remedy = report.fix_in("gpu_usage_hourly", "preview again")
    return Preview(None, False, f"the job would be blocked: {report.refusal(what, scope, remedy)}")


def preview_message(
    kind: str, engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime | None = None
) -> Preview:
    now = now or dt.datetime.now(dt.UTC)
    today = settings.today(now)
    if run_date > today:
        raise ValueError(f"{run_date} is after today ({today} in {settings.timezone})")
    dashboard = settings.dashboard_url
    tz = settings.timezone
    limit = settings.max_hourly_cost_usd

    if kind == "burn-rate":
        checked = usage_rule_report(engine, *local_day_bounds(run_date, tz), max_hourly_cost=limit, now=now)
        if not checked.passed:
            return _blocked(
                checked, f"daily_gpu_costs {run_date} would not be written", days_text(run_date, run_date, tz)
            )
        status = burn_rate_status(engine, run_date, settings, now=now)
        message = burn_rate_message(status, dashboard_url=dashboard)
        if status.is_over:
            return Preview(message, True, f"{run_date}: over the threshold, the job would send this alert")
        return Preview(
            message,
            False,
            f"{run_date}: {money(status.cost_usd)} is within the {money(status.threshold_usd)} "
            "threshold; the job would send nothing",
        )

    if kind == "idle-spend":
        as_of = now if run_date == today else local_day_bounds(run_date, tz)[1]
        report = idle_spend_report(engine, settings, as_of=as_of)
        message = idle_spend_message(report, dashboard_url=dashboard)
        withheld = (
            f"; {plural(len(report.withheld), 'GPU')} not judged (usage rows fail checks)"
            if report.withheld
            else ""
        )
        if report.findings:
            found = plural(len(report.findings), "high-severity finding")
            return Preview(
                message, True, f"as of {as_of:%Y-%m-%d %H:%M} UTC: {found}, the job would alert{withheld}"
            )
        return Preview(
            message,
            False,
            f"as of {as_of:%Y-%m-%d %H:%M} UTC: no high-severity idle spend, nothing to send{withheld}",
        )

    if kind == "daily-summary":
        report_date = run_date - dt.timedelta(days=1)
        first, last = summary_range(report_date)
        checked = usage_rule_report(
            engine, *local_range_bounds(first, last, tz), max_hourly_cost=limit, now=now
        )
        if not checked.passed:
            return _blocked(
                checked, f"gpu_cost_summary of {report_date} would not be written", days_text(first, last, tz)
            )
        scheduled = dt.datetime.combine(run_date, dt.time(settings.daily_summary_hour), settings.tz)
        as_of = min(now, scheduled.astimezone(dt.UTC))
        summary = cost_summary(engine, report_date, settings, as_of=as_of)
        message = daily_summary_message(summary, dashboard_url=dashboard)
        return Preview(message, True, f"the daily summary of {report_date}, sent every day")

    raise ValueError(f"unknown preview {kind!r}; choose one of {', '.join(PREVIEW_KINDS)}")
