"""⚠️ Idle GPU Spend Detected: high-severity idle GPUs not alerted in the last
``IDLE_REALERT_DAYS``, after each successful idle refresh. Each finding has its own ledger key
(per resource and ISO week), so one message covers exactly the findings this run claimed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, nothing
from heliox_orchestration.alerts.formatting import plural
from heliox_orchestration.alerts.kinds import (
    DAY,
    AfterRefresh,
    AlertKind,
    KeyField,
    ManualRun,
    for_,
    iso_week,
    register,
)
from heliox_orchestration.alerts.messages import SlackMessage, idle_spend_message
from heliox_orchestration.alerts.preview import Preview
from heliox_orchestration.assets.refresh import IDLE_REFRESH_JOB
from heliox_orchestration.detections.idle import idle_spend_report, load_idle_spend_report
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.reports import IdleSpendReport
from heliox_orchestration.settings import Settings


def detect_idle_spend(run: AlertRun) -> Detection:
    settings, engine, now = run.settings, run.engine, run.now
    report = load_idle_spend_report(engine, severities=("high",))
    failed = ledger.failed_keys(engine, IDLE_SPEND.prefix(), now)
    by_prefix = {idle_key_prefix(f.resource_id): f for f in report.findings}
    # A failed alert whose finding went away is no longer relevant.
    ledger.expire(engine, [k for k in failed if IDLE_SPEND.prefix_of(k) not in by_prefix], now)
    recent = ledger.recently_sent(
        engine, list(by_prefix), since=now - dt.timedelta(days=settings.idle_realert_days)
    )
    fresh = [f for prefix, f in by_prefix.items() if prefix not in recent]
    if not fresh:
        return nothing(
            f"Nothing new: {len(report.findings)} high-severity findings, all alerted recently",
            "nothing new",
            open_findings=len(report.findings),
        )
    today = settings.today(now)
    keys = {idle_key(f.resource_id, today): f for f in fresh}
    # An earlier week's failed delivery of a finding goes out with this week's alert.
    keys.update({k: by_prefix[p] for k in failed if (p := IDLE_SPEND.prefix_of(k)) in by_prefix})

    def claimed(won: Sequence[str]) -> tuple:
        findings = {keys[k] for k in won}
        return tuple(f for f in fresh if f in findings)

    def message(won: Sequence[str]) -> SlackMessage:
        idle = IdleSpendReport(report.as_of, claimed(won), report.withheld)
        return idle_spend_message(idle, dashboard_url=settings.dashboard_url)

    alert = Alert(
        list(keys),
        message,
        names={k: f"resource {f.resource_id}" for k, f in keys.items()},
        metadata_for=lambda won: {"findings": len(claimed(won))},
    )
    return Detection([alert])


def preview_idle_spend(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    as_of = now if run_date == settings.today(now) else local_day_bounds(run_date, settings.timezone)[1]
    report = idle_spend_report(engine, settings, as_of=as_of)
    message = idle_spend_message(report, dashboard_url=settings.dashboard_url)
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


IDLE_SPEND = register(
    AlertKind(
        name="idle-spend",
        job_name="idle_spend_alert_job",
        op_name="send_idle_spend_alert",
        description="⚠️ Idle GPU Spend Detected, for new high-severity findings (after each idle refresh).",
        fields=(KeyField("resource"), KeyField("week", 8)),
        relevance="24 hours after each attempt, while the finding stays open",
        relevant_until=for_(DAY),
        detect=detect_idle_spend,
        trigger=AfterRefresh(
            sensor_name="idle_spend_alert_sensor",
            refresh_job=IDLE_REFRESH_JOB,
            description="After each successful idle refresh, alert on new high-severity idle GPUs.",
        ),
        manual=ManualRun(IDLE_REFRESH_JOB, partition=lambda s, now: None, config=lambda s, now: {}),
        preview=preview_idle_spend,
    )
)


def idle_key(resource_id: str, local_day: dt.date) -> str:
    return IDLE_SPEND.key(resource_id, iso_week(local_day))


def idle_key_prefix(resource_id: str) -> str:
    return IDLE_SPEND.prefix(resource_id)
