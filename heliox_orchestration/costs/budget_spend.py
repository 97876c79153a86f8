"""Month-to-date spend against the monthly budgets (``detections/budget.py``): the fleet's
(``MONTHLY_BUDGET_USD``) and each routed team's (``monthly_budget_usd`` in the routing file).

One bounded query sums ``gpu_usage_hourly`` per local day and team, in integer micro-dollars,
over the local month of the evaluated day and the 7 days before it, after the data-quality
rules passed on the very same rows: a bad row holds back the budgets, nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Date, Engine, and_, column, select, values

from heliox_orchestration.costs.common import as_int
from heliox_orchestration.costs.daily_costs import local_days
from heliox_orchestration.costs.quality import RuleReport, usage_rule_report
from heliox_orchestration.db.schema import UTCDateTime, gpu_usage_hourly, money_sum_micros
from heliox_orchestration.detections.budget import BudgetStatus, budget_status, month_start, trailing_days
from heliox_orchestration.partitions import local_range_bounds
from heliox_orchestration.settings import Settings


def budget_range(through: dt.date, last_complete: dt.date) -> tuple[dt.date, dt.date]:
    """The local days a budget evaluation reads: its month so far and the trailing 7 days."""
    return min(month_start(through), trailing_days(last_complete + dt.timedelta(days=1))[0]), through


@dataclass(frozen=True)
class DailyByTeam:
    fleet: dict[dt.date, int]
    teams: dict[str, dict[dt.date, int]]
    days_with_data: set[dt.date]


def daily_spend_by_team(engine: Engine, first: dt.date, last: dt.date, timezone: str) -> DailyByTeam:
    days = local_days(first, last, timezone)
    bounds = (
        values(column("day", Date), column("start_utc", UTCDateTime()), column("end_utc", UTCDateTime()))
        .data([(d.day, d.start, d.end) for d in days])
        .cte("budget_days")
    )
    u = gpu_usage_hourly.c
    query = (
        select(bounds.c.day, u.team, money_sum_micros(u.cost_usd).label("cost_micros"))
        .select_from(
            bounds.join(
                gpu_usage_hourly, and_(u.usage_hour >= bounds.c.start_utc, u.usage_hour < bounds.c.end_utc)
            )
        )
        .where(u.usage_hour >= days[0].start, u.usage_hour < days[-1].end)
        .group_by(bounds.c.day, u.team)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    fleet: dict[dt.date, int] = defaultdict(int)
    teams: dict[str, dict[dt.date, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        fleet[r.day] += as_int(r.cost_micros)
        if r.team is not None:
            teams[r.team][r.day] += as_int(r.cost_micros)
    return DailyByTeam(dict(fleet), {t: dict(v) for t, v in teams.items()}, set(fleet))


@dataclass(frozen=True)
class Budgets:
    """The statuses of every budget set (None: the fleet's), or why they are held back."""

    statuses: dict[str | None, BudgetStatus]
    checked: RuleReport | None = None  # set when the rows failed the rules: nothing computed


def budgets(
    engine: Engine, through: dt.date, settings: Settings, now: dt.datetime, *, complete: bool = False
) -> Budgets:
    """The month of ``through`` for the fleet's budget and each routed team's. ``complete``:
    ``through`` has ended (the daily summary's report date) and is part of the trailing mean;
    otherwise (today) the mean is over the 7 days before it."""
    wanted: dict[str | None, Decimal] = {}
    if settings.monthly_budget_usd is not None:
        wanted[None] = settings.monthly_budget_usd
    wanted |= {t.team: t.monthly_budget_usd for t in settings.teams if t.monthly_budget_usd is not None}
    if not wanted:
        return Budgets({})
    last_complete = through if complete else through - dt.timedelta(days=1)
    first, last = budget_range(through, last_complete)
    tz = settings.timezone
    checked = usage_rule_report(
        engine, *local_range_bounds(first, last, tz), max_hourly_cost=settings.max_hourly_cost_usd, now=now
    )
    if not checked.passed:
        return Budgets({}, checked)
    spend = daily_spend_by_team(engine, first, last, tz)
    statuses = {
        team: budget_status(
            through,
            spend.fleet if team is None else spend.teams.get(team, {}),
            spend.days_with_data,
            amount,
            tz,
            last_complete=last_complete,
        )
        for team, amount in wanted.items()
    }
    return Budgets(statuses)
