"""⚠️ Idle GPU Spend Detected: high-severity idle GPUs not alerted in the last
``IDLE_REALERT_DAYS`` (or since the GPU's last resolution), after each successful idle refresh.
Each finding has its own ledger key per destination (per resource and ISO week), so one message
covers exactly the findings this run claimed: a routed team's in its own channel, its top 3 and
total; every other finding in the default channel. A delivered alert opens the GPU's episode,
which its resolution closes (``detections/resolution.py``, ``alerts/idle_resolved.py``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.delivery import Delivery
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject, nothing
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
from heliox_orchestration.alerts.messages import SlackMessage, idle_spend_message, rightsizing_message
from heliox_orchestration.alerts.preview import Preview
from heliox_orchestration.alerts.routes import finding_destinations
from heliox_orchestration.assets.refresh import IDLE_REFRESH_JOB
from heliox_orchestration.detections.idle import (
    compute_idle_evaluation,
    load_idle_evaluation,
    load_idle_spend_report,
)
from heliox_orchestration.detections.resolution import latest_episodes, open_episodes
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.reports import IdleFinding, IdleSpendReport
from heliox_orchestration.settings import Settings

RIGHTSIZE = "rightsize-"  # the resource field of a rightsizing alert's key


def _fresh(
    engine: Engine, findings: Sequence[IdleFinding], team: str | None, now: dt.datetime, realert: dt.timedelta
) -> tuple[dict[str, IdleFinding], list[IdleFinding], dict[str, int]]:
    """The findings of one destination by key prefix, those to alert there now (not alerted
    there recently, and not resolved), and the resolved episode of each GPU idle again after its
    resolution: that is news whenever the GPU was alerted before."""
    episodes = latest_episodes(engine, [f.resource_id for f in findings])
    by_prefix = {IDLE_SPEND.prefix(f.resource_id, team=team): f for f in findings}
    recent: set[str] = set()
    reopened: dict[str, int] = {}
    groups: dict[dt.datetime, list[str]] = {}
    for prefix, f in by_prefix.items():
        since = now - realert
        episode = episodes.get(f.resource_id)
        if episode is not None and episode.resolution_found_at is not None:
            if episode.reopened_at is None:
                recent.add(prefix)  # resolved (gone or busy): the idle rule has not caught up
                continue
            since = max(since, episode.resolution_found_at)
            reopened[f.resource_id] = episode.episode_id
        groups.setdefault(since, []).append(prefix)
    for since, prefixes in groups.items():
        recent |= ledger.recently_sent(engine, prefixes, since=since)
    return by_prefix, [f for prefix, f in by_prefix.items() if prefix not in recent], reopened


def _destination_alert(
    run: AlertRun, report: IdleSpendReport, team: str | None, findings: Sequence[IdleFinding]
) -> Alert | None:
    """The alert of one destination: its findings not alerted there recently, and any of its
    earlier failed deliveries whose finding is still open."""
    settings, engine, now = run.settings, run.engine, run.now
    failed = ledger.failed_keys(engine, IDLE_SPEND.prefix(team=team), now)
    by_prefix, fresh, reopened = _fresh(
        engine, findings, team, now, dt.timedelta(days=settings.idle_realert_days)
    )
    # A failed alert whose finding went away is no longer relevant.
    ledger.expire(engine, [k for k in failed if IDLE_SPEND.prefix_of(k) not in by_prefix], now)
    if not fresh:
        return None
    today = settings.today(now)
    keys = {idle_key(f.resource_id, today, team=team, after=reopened.get(f.resource_id)): f for f in fresh}
    # An earlier week's failed delivery of a finding goes out with this week's alert.
    keys.update({k: by_prefix[p] for k in failed if (p := IDLE_SPEND.prefix_of(k)) in by_prefix})

    def claimed(won: Sequence[str]) -> tuple[IdleFinding, ...]:
        findings = {keys[k] for k in won}
        return tuple(f for f in fresh if f in findings)

    def message(won: Sequence[str]) -> SlackMessage:
        # The GPUs Heliox could not judge are named in the default channel only.
        withheld = report.withheld if team is None else ()
        idle = IdleSpendReport(report.as_of, claimed(won), withheld)
        return idle_spend_message(idle, dashboard_url=settings.dashboard_url, team=team)

    def delivered(delivery: Delivery) -> None:
        open_episodes(engine, claimed(delivery.keys), now)

    return Alert(
        list(keys),
        message,
        names={k: f"resource {f.resource_id}" for k, f in keys.items()},
        metadata_for=lambda won: {"findings": len(claimed(won))},
        team=team,
        subjects={k: Subject(f.team, f.resource_id, f.model_name) for k, f in keys.items()},
        on_delivered=delivered,
    )


def _rightsizing_alert(run: AlertRun) -> Alert | None:
    """With ``RIGHTSIZE_ALERTS=true``: the rightsizing findings not alerted in the last
    ``IDLE_REALERT_DAYS``, in one message to the default channel. Their keys name the resource as
    ``rightsize-<resource>``, apart from its idle alerts."""
    findings = load_idle_evaluation(run.engine).to_rightsizing()
    by_prefix = {IDLE_SPEND.prefix(f"{RIGHTSIZE}{f.resource_id}"): f for f in findings}
    since = run.now - dt.timedelta(days=run.settings.idle_realert_days)
    recent = ledger.recently_sent(run.engine, by_prefix, since=since)
    fresh = [f for p, f in by_prefix.items() if p not in recent]
    if not fresh:
        return None
    today = run.settings.today(run.now)
    keys = {idle_key(f"{RIGHTSIZE}{f.resource_id}", today): f for f in fresh}

    def message(won: Sequence[str]) -> SlackMessage:
        return rightsizing_message([keys[k] for k in won], dashboard_url=run.settings.dashboard_url)

    return Alert(
        list(keys),
        message,
        names={k: f"rightsizing of {f.resource_id}" for k, f in keys.items()},
        subjects={k: Subject(f.team, f.resource_id, f.model_name) for k, f in keys.items()},
    )


def detect_idle_spend(run: AlertRun) -> Detection:
    """One alert per destination: each routed team's findings to its channel, the others (and
    a team's with ``copy_to_default``) to the default one."""
    report = load_idle_spend_report(run.engine, severities=("high",))
    destinations: dict[str | None, list[IdleFinding]] = {None: [], **{r.team: [] for r in run.settings.teams}}
    for f in report.findings:
        for team in finding_destinations(f.team, run.settings):
            destinations.setdefault(team, []).append(f)
    alerts = [
        alert
        for team, findings in destinations.items()
        if (alert := _destination_alert(run, report, team, findings)) is not None
    ]
    if run.settings.rightsize_alerts and (rightsizing := _rightsizing_alert(run)) is not None:
        alerts.append(rightsizing)
    if not alerts:
        return nothing(
            f"Nothing new: {len(report.findings)} high-severity findings, all alerted recently",
            "nothing new",
            open_findings=len(report.findings),
        )
    return Detection(alerts)


def preview_idle_spend(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    as_of = now if run_date == settings.today(now) else local_day_bounds(run_date, settings.timezone)[1]
    evaluation = compute_idle_evaluation(engine, settings, as_of)
    report = evaluation.report()
    message = idle_spend_message(report, dashboard_url=settings.dashboard_url)
    withheld = (
        f"; {plural(len(report.withheld), 'GPU')} not judged (usage rows fail checks)"
        if report.withheld
        else ""
    )
    rightsizing = evaluation.to_rightsizing()
    if rightsizing:
        sent = (
            "alerted: RIGHTSIZE_ALERTS=true"
            if settings.rightsize_alerts
            else "not alerted (RIGHTSIZE_ALERTS)"
        )
        withheld += f"; {plural(len(rightsizing), 'rightsizing finding')} ({sent})"
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
        fields=(KeyField("resource"), KeyField("week", 20)),
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
        team_routed=True,
        mute_scopes=("team", "resource", "model"),
    )
)


def idle_key(resource_id: str, local_day: dt.date, team: str | None = None, after: int | None = None) -> str:
    """Once per ISO week; a GPU idle again after the resolution of its episode ``after`` gets a
    key of its own (``2026-W02.17``), as the week's may be taken by the alert that episode
    answered."""
    week = iso_week(local_day)
    return IDLE_SPEND.key(resource_id, week if after is None else f"{week}.{after}", team=team)


def idle_key_prefix(resource_id: str, team: str | None = None) -> str:
    return IDLE_SPEND.prefix(resource_id, team=team)
