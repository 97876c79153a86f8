"""💰 GPU Budget Alert and 🔮 GPU Budget Forecast Alert: the local month's spend against
``MONTHLY_BUDGET_USD`` (the fleet, default channel) and each routed team's
``monthly_budget_usd`` (its channel). ACTUAL: month-to-date spend reached a level of
``BUDGET_ALERT_LEVELS`` (50, 80, 100 % by default); FORECASTED: month to date + trailing 7-day
daily mean x days left exceeds the budget (while the actual spend is under 100 %). Each level,
and the forecast, alerts once per month and destination through the ledger
(``budget[@team]:<YYYY-MM>:<level|forecast>``). Launched after each successful refresh of
today's ``daily_gpu_costs`` (``budget_alert_sensor``); a backfill of older days never alerts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from dagster import Config, DagsterRun
from pydantic import Field
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject, nothing
from heliox_orchestration.alerts.kinds import AfterRefresh, AlertKind, Fields, KeyField, ManualRun, register
from heliox_orchestration.alerts.messages import SlackMessage, context, header, section
from heliox_orchestration.alerts.preview import Preview, blocked
from heliox_orchestration.alerts.spend_messages import budget_message, month_line
from heliox_orchestration.assets.refresh import COSTS_REFRESH_JOB
from heliox_orchestration.costs.budget_spend import budget_range, budgets
from heliox_orchestration.costs.quality import days_text
from heliox_orchestration.detections.budget import FORECAST, BudgetStatus, levels_crossed, month_end
from heliox_orchestration.partitions import PARTITION_TAG, local_day_bounds, parse_day
from heliox_orchestration.settings import Settings

# A refresh of a partition older than this (UTC days) is a backfill: no budget alert after it.
RECENT_PARTITION_DAYS = 2


class BudgetAlertConfig(Config):
    day: str | None = Field(
        default=None, description="Local day YYYY-MM-DD whose month is checked. Default: today in TIMEZONE."
    )


def _actual_alert(status: BudgetStatus, levels: Sequence[int], team: str | None) -> Alert:
    keys = {budget_key(status.month, level, team): level for level in reversed(levels)}

    def message(won: Sequence[str]) -> SlackMessage:
        return budget_message(status, max((keys[k] for k in won), default=levels[-1]), team=team)

    return Alert(list(keys), message, team=team, subjects=dict.fromkeys(keys, Subject(team=team)))


def detect_budget(run: AlertRun) -> Detection:
    settings = run.settings
    assert isinstance(run.config, BudgetAlertConfig)
    day = parse_day(run.config.day, "day") or settings.today(run.now)
    result = budgets(run.engine, day, settings, run.now)
    if result.checked is not None:
        first, last = budget_range(day, day - dt.timedelta(days=1))
        scope = days_text(first, last, settings.timezone)
        note = result.checked.refusal("budgets held back", scope, "fix them in gpu_usage_hourly")
        run.log.warning(note)
        return nothing(note, "held back")
    if not result.statuses:
        return nothing("No budget set (MONTHLY_BUDGET_USD, or monthly_budget_usd of a team).", "no budget")
    alerts, metadata = [], {}
    for team, status in result.statuses.items():
        crossed = levels_crossed(status, settings.budget_alert_levels)
        prefix = "" if team is None else f"team/{team}/"
        metadata[f"{prefix}used_pct"] = float(round(status.used_pct, 1))
        if crossed:
            alerts.append(_actual_alert(status, crossed, team))
        if status.forecast_over and not any(level >= 100 for level in crossed):
            key = budget_key(status.month, FORECAST, team)
            alerts.append(
                Alert(
                    [key], budget_message(status, None, team=team), team=team, subjects={key: Subject(team)}
                )
            )
    if not alerts:
        return nothing(f"{day}: every budget is under its levels and forecast", "within budget", **metadata)
    return Detection(alerts, metadata=metadata)


def preview_budget(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    as_of = min(now, local_day_bounds(run_date, settings.timezone)[1])
    configured = settings.monthly_budget_usd is not None
    fleet = settings if configured else replace(settings, monthly_budget_usd=Decimal(1), teams=())
    result = budgets(engine, run_date, fleet, as_of)
    if result.checked is not None:
        first, last = budget_range(run_date, run_date - dt.timedelta(days=1))
        return blocked(
            result.checked,
            "the budget alert would not be computed",
            days_text(first, last, settings.timezone),
        )
    status = result.statuses[None]
    if not configured:
        line = month_line(status).replace(" of $1.00 budget", "")
        message = SlackMessage.build(
            f"No GPU budget set. {line}",
            [
                header("💰 GPU Spend This Month"),
                section(line),
                context("Set MONTHLY_BUDGET_USD (or a team's monthly_budget_usd) to alert on it."),
            ],
        )
        return Preview(message, False, f"MONTHLY_BUDGET_USD is not set: nothing to alert on ({line})")
    crossed = levels_crossed(status, settings.budget_alert_levels)
    if crossed:
        return Preview(
            budget_message(status, crossed[-1]),
            True,
            f"{run_date}: the fleet passed {crossed[-1]}% of its budget",
        )
    if status.forecast_over:
        return Preview(budget_message(status, None), True, f"{run_date}: the forecast exceeds the budget")
    return Preview(
        budget_message(status, None),
        False,
        f"{run_date}: under every level and the forecast; nothing to send",
    )


def _recent(refresh: DagsterRun) -> dict[str, object] | str:
    day = refresh.tags.get(PARTITION_TAG)
    if day and dt.date.fromisoformat(day) < clock.utc_now().date() - dt.timedelta(days=RECENT_PARTITION_DAYS):
        return f"The refresh of {day} is a backfill: budgets are checked after today's refreshes."
    return {}


def _month_end(fields: Fields, now: dt.datetime, timezone: str) -> dt.datetime:
    first = dt.date.fromisoformat(f"{fields['month']}-01")
    return local_day_bounds(month_end(first), timezone)[1]


BUDGET = register(
    AlertKind(
        name="budget",
        job_name="budget_alert_job",
        op_name="send_budget_alert",
        description="💰 GPU Budget Alert: month-to-date spend at a budget level, or forecast over it.",
        fields=(KeyField("month", 7), KeyField("level", 8)),
        relevance="its local month",
        relevant_until=_month_end,
        detect=detect_budget,
        config=BudgetAlertConfig,
        trigger=AfterRefresh(
            sensor_name="budget_alert_sensor",
            refresh_job=COSTS_REFRESH_JOB,
            description="After each successful refresh of today's daily_gpu_costs, alert on budget "
            "levels and forecasts reached this month.",
            config=_recent,
        ),
        manual=ManualRun(
            COSTS_REFRESH_JOB, partition=lambda s, now: s.today(now).isoformat(), config=lambda s, now: {}
        ),
        preview=preview_budget,
        redelivery_config=lambda f: {},
        redelivery_scope=lambda f: f["month"],
        team_routed=True,
        mute_scopes=("team",),
    )
)


def budget_key(month: str, level: int | str, team: str | None = None) -> str:
    return BUDGET.key(month, level, team=team)
