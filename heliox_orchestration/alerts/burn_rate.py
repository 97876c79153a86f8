"""🔥 High Burn Rate Alert: a local day whose GPU spend crossed the threshold, and once more per
escalation level; for the whole fleet (the default channel) and for each team of the routing
file with a threshold of its own (its spend, in its channel). ``burn_rate_sensor``
(automation/sensors.py) launches it after a checked refresh of today's ``daily_gpu_costs``;
past days (backfills, re-runs) never alert. A day that ends under a level it alerted on is not
"resolved": only idle findings resolve."""

from __future__ import annotations

import datetime as dt

from dagster import Config
from pydantic import Field
from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject, nothing
from heliox_orchestration.alerts.kinds import AlertKind, KeyField, ManualRun, end_of_day, register
from heliox_orchestration.alerts.messages import burn_rate_message, with_note
from heliox_orchestration.alerts.preview import Preview, blocked
from heliox_orchestration.assets.refresh import COSTS_REFRESH_JOB
from heliox_orchestration.costs.quality import days_text, usage_rule_report
from heliox_orchestration.costs.summary import burn_rate_status, load_burn_rate_status
from heliox_orchestration.costs.teams import team_burn_rates
from heliox_orchestration.detections.burn_rate import burn_level, levels_up_to
from heliox_orchestration.money import format_usd
from heliox_orchestration.partitions import local_day_bounds, parse_day
from heliox_orchestration.reports import BurnRateStatus
from heliox_orchestration.settings import Settings


class BurnRateAlertConfig(Config):
    day: str | None = Field(default=None, description="Local day YYYY-MM-DD. Default: today in TIMEZONE.")


def levels_of(status: BurnRateStatus, settings: Settings) -> int | None:
    return burn_level(status.cost_usd, status.threshold_usd, settings.burn_rate_escalation_pct)


def team_statuses(
    engine: Engine, day: dt.date, settings: Settings, now: dt.datetime
) -> tuple[dict[str, BurnRateStatus], str | None]:
    """The day's spend of each team with a threshold of its own, or none and why: the rows of
    the day must pass the data rules first, as the fleet's materialized spend did."""
    if not any(t.burn_rate_threshold_usd is not None for t in settings.teams):
        return {}, None
    bounds = local_day_bounds(day, settings.timezone)
    checked = usage_rule_report(engine, *bounds, max_hourly_cost=settings.max_hourly_cost_usd, now=now)
    if not checked.passed:
        return {}, f"teams' burn rates held back: {day} has usage rows failing the data rules"
    return team_burn_rates(engine, day, settings, settings.teams, now), None


def _alert(day: dt.date, status: BurnRateStatus, level: int, settings: Settings, team: str | None) -> Alert:
    message = burn_rate_message(status, dashboard_url=settings.dashboard_url, team=team)
    if level > 100:
        message = with_note(message, f"📈 Escalation: spend has passed {level}% of the threshold")
    # The day has passed every level up to this one: this message also stands for any of them
    # never sent (a jump past several levels, or an earlier level whose delivery failed).
    levels = levels_up_to(level, settings.burn_rate_escalation_pct)
    keys = [burn_rate_key(day, lvl, team) for lvl in reversed(levels)]
    return Alert(keys, message, team=team, subjects={k: Subject(team=team) for k in keys})


def detect_burn_rate(run: AlertRun) -> Detection:
    """The day's materialized spend against the threshold and its escalation levels; and each
    team's spend against its own threshold (routing file), in its own channel."""
    settings, engine, now = run.settings, run.engine, run.now
    assert isinstance(run.config, BurnRateAlertConfig)
    day = parse_day(run.config.day, "day") or settings.today(now)
    status = load_burn_rate_status(engine, day, settings, now)
    statuses: dict[str | None, BurnRateStatus] = {None: status}
    teams, held_back = team_statuses(engine, day, settings, now)
    statuses.update(teams)
    alerts: list[Alert] = []
    metadata: dict[str, object] = {}
    for team, of_team in statuses.items():
        level = levels_of(of_team, settings)
        if level is None:
            prefix = BURN_RATE.prefix(day, team=team)
            ledger.expire(engine, ledger.failed_keys(engine, prefix, now), now)
            continue
        alerts.append(_alert(day, of_team, level, settings, team))
        metadata["level_pct" if team is None else f"team/{team}/level_pct"] = level
    if held_back:
        run.log.warning(held_back)
        metadata["teams_held_back"] = held_back
    if not alerts:
        return nothing(
            f"{day}: {format_usd(status.cost_usd)} is within the threshold; nothing to send",
            "within threshold",
            **metadata,
        )
    return Detection(alerts, metadata=metadata)


def preview_burn_rate(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    tz = settings.timezone
    checked = usage_rule_report(
        engine, *local_day_bounds(run_date, tz), max_hourly_cost=settings.max_hourly_cost_usd, now=now
    )
    if not checked.passed:
        return blocked(
            checked, f"daily_gpu_costs {run_date} would not be written", days_text(run_date, run_date, tz)
        )
    status = burn_rate_status(engine, run_date, settings, now=now)
    message = burn_rate_message(status, dashboard_url=settings.dashboard_url)
    if status.is_over:
        return Preview(message, True, f"{run_date}: over the threshold, the job would send this alert")
    return Preview(
        message,
        False,
        f"{run_date}: {format_usd(status.cost_usd)} is within the {format_usd(status.threshold_usd)} "
        "threshold; the job would send nothing",
    )


def _today(settings: Settings, now: dt.datetime) -> str:
    return settings.today(now).isoformat()


BURN_RATE = register(
    AlertKind(
        name="burn-rate",
        job_name="burn_rate_alert_job",
        op_name="send_burn_rate_alert",
        description="🔥 High Burn Rate Alert for a local day (launched by the burn-rate sensor).",
        fields=(KeyField("day", 10), KeyField("level", 5)),
        relevance="its local day",
        relevant_until=end_of_day("day"),
        detect=detect_burn_rate,
        config=BurnRateAlertConfig,
        manual=ManualRun(COSTS_REFRESH_JOB, partition=_today, config=lambda s, now: {"day": _today(s, now)}),
        preview=preview_burn_rate,
        redelivery_config=lambda f: {"day": f["day"]},
        redelivery_scope=lambda f: f["day"],
        team_routed=True,
        mute_scopes=("team",),
    )
)


def burn_rate_key(day: dt.date, level: int, team: str | None = None) -> str:
    return BURN_RATE.key(day.isoformat(), level, team=team)
