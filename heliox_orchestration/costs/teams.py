"""A team's GPU spend of one local day, for the team's own burn-rate alert (a threshold in the
routing file). Summed from ``gpu_usage_hourly`` by its ``team`` column in integer micro-dollars,
with the same elapsed-hours projection as the fleet's (``costs/summary.burn_rate_from``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
from sqlalchemy import Engine, func, select

from heliox_orchestration.costs.common import as_int
from heliox_orchestration.costs.summary import top_drivers
from heliox_orchestration.db.schema import gpu_usage_hourly, money_sum_micros
from heliox_orchestration.money import MICROS, micros_to_dollars
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.reports import BurnRateStatus
from heliox_orchestration.routing import TeamRoute
from heliox_orchestration.settings import Settings

HOUR = dt.timedelta(hours=1)


def team_burn_rates(
    engine: Engine, day: dt.date, settings: Settings, teams: Sequence[TeamRoute], now: dt.datetime
) -> dict[str, BurnRateStatus]:
    """The day's spend (so far, for today) of each team against its own threshold."""
    routed = {t.team: t.burn_rate_threshold_usd for t in teams if t.burn_rate_threshold_usd is not None}
    if not routed:
        return {}
    start, end = local_day_bounds(day, settings.timezone)
    u = gpu_usage_hourly.c
    query = (
        select(
            u.team,
            u.model_name,
            money_sum_micros(u.cost_usd).label("cost_micros"),
            func.max(u.usage_hour).label("last_usage_hour"),
        )
        .where(u.usage_hour >= start, u.usage_hour < end, u.team.in_(list(routed)))
        .group_by(u.team, u.model_name)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    hours_in_day = int((end - start) / HOUR)
    is_today = day == settings.today(now)
    statuses = {}
    for team, threshold in routed.items():
        mine = [r for r in rows if r.team == team]
        micros = sum(as_int(r.cost_micros) for r in mine)
        frame = pd.DataFrame(
            {
                "model_name": [r.model_name for r in mine],
                "cost_micros": [as_int(r.cost_micros) for r in mine],
            },
            dtype=object,
        )
        status = BurnRateStatus(
            day=day,
            cost_usd=micros_to_dollars(micros),
            threshold_usd=threshold,
            top_drivers=top_drivers(frame),
            is_today=is_today,
            hours_in_day=hours_in_day,
            has_data=bool(mine),
        )
        if is_today:
            last = max((r.last_usage_hour for r in mine), default=None)
            elapsed = min(hours_in_day, int((last + HOUR - start) / HOUR)) if last is not None else 0
            projected = (
                (status.cost_usd / elapsed * hours_in_day).quantize(MICROS, rounding=ROUND_HALF_UP)
                if elapsed
                else None
            )
            status = replace(status, hours_elapsed=Decimal(elapsed), projected_cost_usd=projected)
        statuses[team] = status
    return statuses
