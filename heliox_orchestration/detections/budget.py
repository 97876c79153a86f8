"""The monthly budget rules, on numbers alone: ACTUAL month-to-date spend against levels of the
budget, and the FORECASTED month-end spend

    forecast = month to date + trailing 7-day daily mean x days left in the month

where the trailing mean is over the 7 complete local days up to the evaluated one (for today, the
7 days before it; they may lie in the previous month; days without any usage data are gaps, left
out of the mean) and the days left are the local days of the month after the evaluated one.
Months are local months in ``TIMEZONE``.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from heliox_orchestration.money import MICROS, micros_to_dollars

TRAILING_DAYS = 7
FORECAST = "forecast"  # the level field of a forecast alert's key


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def month_end(day: dt.date) -> dt.date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def trailing_days(day: dt.date) -> tuple[dt.date, ...]:
    """The 7 complete days before ``day``."""
    return tuple(day - dt.timedelta(days=n) for n in range(TRAILING_DAYS, 0, -1))


@dataclass(frozen=True)
class BudgetStatus:
    """One budget's local month through ``through`` (today: its spend so far)."""

    timezone: str
    month_start: dt.date
    through: dt.date
    budget_usd: Decimal
    month_to_date_usd: Decimal
    daily_mean_usd: Decimal  # trailing 7-day mean of the complete days before ``through``
    days_left: int  # days of the month after ``through``

    @property
    def forecast_usd(self) -> Decimal:
        return self.month_to_date_usd + self.daily_mean_usd * self.days_left

    @property
    def used_pct(self) -> Decimal:
        return self.month_to_date_usd / self.budget_usd * 100

    @property
    def forecast_over(self) -> bool:
        return self.forecast_usd > self.budget_usd

    @property
    def month(self) -> str:
        return f"{self.month_start:%Y-%m}"


def budget_status(
    through: dt.date,
    daily_micros: Mapping[dt.date, int],
    days_with_data: Iterable[dt.date],
    budget_usd: Decimal,
    timezone: str,
    *,
    last_complete: dt.date | None = None,
) -> BudgetStatus:
    """The month of ``through`` from micro-dollars per local day (the month so far and the 7
    days ending ``last_complete``: by default the day before ``through``, which may be today)."""
    start = month_start(through)
    mtd = sum(micros for day, micros in daily_micros.items() if start <= day <= through)
    have = set(days_with_data)
    last = last_complete if last_complete is not None else through - dt.timedelta(days=1)
    window = [d for d in trailing_days(last + dt.timedelta(days=1)) if d in have]
    mean = (
        (Decimal(sum(daily_micros.get(d, 0) for d in window)) / len(window) * MICROS).quantize(
            MICROS, rounding=ROUND_HALF_UP
        )
        if window
        else Decimal(0)
    )
    return BudgetStatus(
        timezone,
        start,
        through,
        budget_usd,
        micros_to_dollars(mtd),
        mean,
        (month_end(through) - through).days,
    )


def levels_crossed(status: BudgetStatus, levels: Iterable[int]) -> list[int]:
    """The ACTUAL levels (percent of the budget) month-to-date spend has reached, lowest first."""
    return sorted(lvl for lvl in levels if status.month_to_date_usd * 100 >= status.budget_usd * lvl)
