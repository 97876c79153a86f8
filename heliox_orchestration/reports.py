"""The numbers each Slack message is built from: the contract between the cost assets
(``heliox_orchestration.assets``) and the message renderers (``heliox_orchestration.alerts``).

Money is ``Decimal`` dollars, exact to the micro-dollar as summed by the database; renderers
round half-up to the cent for display. Days are local calendar days in ``TIMEZONE``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class CostDriver:
    """One line of a "top consumers" list: a workload (model) or another grouping."""

    label: str  # "Stable Diffusion XL", or "Unattributed" for NULL model names
    cost_usd: Decimal


@dataclass(frozen=True)
class BurnRateStatus:
    """A day's spend against the burn-rate threshold."""

    day: dt.date
    cost_usd: Decimal  # spend of the day (so far, for today)
    threshold_usd: Decimal
    top_drivers: tuple[CostDriver, ...] = ()  # top 3 by cost
    is_today: bool = False
    hours_elapsed: Decimal | None = None  # today: elapsed hours of the local day with data
    hours_in_day: int = 24  # 23 or 25 on DST change days
    projected_cost_usd: Decimal | None = None  # today: cost / hours_elapsed * hours_in_day
    has_data: bool = True  # False: no usage rows at all that day ("no usage data", not $0 spend)

    @property
    def over_by_usd(self) -> Decimal:
        return self.cost_usd - self.threshold_usd

    @property
    def over_pct(self) -> Decimal:
        """Percent over the threshold (52.3 for $15,234.56 against $10,000)."""
        return (self.cost_usd - self.threshold_usd) / self.threshold_usd * 100

    @property
    def is_over(self) -> bool:
        return self.cost_usd > self.threshold_usd


@dataclass(frozen=True)
class IdleFinding:
    """One idle-GPU recommendation (a row of ``idle_gpu_recommendations``)."""

    resource_id: str
    provider: str
    gpu_type: str
    gpu_count: int
    region: str | None
    model_name: str | None
    team: str | None
    idle_days: int  # trailing idle streak hours // 24
    idle_pct: int  # idle hours / observed hours in the window, whole percent
    monthly_savings_usd: Decimal  # mean hourly cost over the streak x 730
    severity: str  # "high" | "medium" | "low"
    title: str  # "Idle GPU: H100 on AWS"
    detail: str  # "100% idle for 14 days"
    hourly_cost_usd: Decimal | None = None  # mean over the idle streak (monthly = this x 730)
    action: str = "terminate"  # "reallocate" for committed capacity: $0 savings from terminating


@dataclass(frozen=True)
class RightsizingFinding:
    """One rightsizing recommendation (a row of ``rightsizing_recommendations``)."""

    resource_id: str
    provider: str
    gpu_type: str
    gpu_count: int
    recommended_gpu_count: int  # ceil(peak hourly GPU load), at least 1
    team: str | None
    model_name: str | None
    mean_utilization_pct: float
    peak_gpu_load: float
    monthly_savings_usd: Decimal  # spare GPUs x per-GPU hourly cost x 730 ($0 when committed)
    action: str  # "rightsize" | "reallocate" (committed capacity)
    title: str
    detail: str


@dataclass(frozen=True)
class WithheldResource:
    """A GPU resource left out of the idle rule: some of its usage rows in the window fail the
    data-quality rules, so any verdict on it would rest on numbers Heliox cannot trust."""

    resource_id: str
    usage_rows: int  # its rows in the window that fail a rule
    problems: tuple[str, ...]  # the rules they fail: "negative cost_usd", ...


@dataclass(frozen=True)
class IdleSpendReport:
    as_of: dt.datetime  # evaluation instant (UTC)
    findings: tuple[IdleFinding, ...]  # the findings to alert on, highest savings first
    withheld: tuple[WithheldResource, ...] = ()  # resources not judged: their rows fail checks

    @property
    def total_monthly_savings_usd(self) -> Decimal:
        return sum((f.monthly_savings_usd for f in self.findings), Decimal(0))


@dataclass(frozen=True)
class DailyCostPoint:
    day: dt.date
    cost_usd: Decimal
    has_data: bool = True  # False: no usage rows at all that day (a gap, not a $0 day)


@dataclass(frozen=True)
class CostSummary:
    """The daily-summary numbers for ``report_date`` (the day the summary is about: yesterday)."""

    report_date: dt.date
    yesterday_cost_usd: Decimal
    last_7_days_cost_usd: Decimal  # the 7 complete local days ending with report_date
    last_30_days_cost_usd: Decimal  # the 30 complete local days ending with report_date
    top_models: tuple[CostDriver, ...]  # top 3 of report_date, "Unattributed" for NULL names
    high_severity_count: int
    potential_savings_monthly_usd: Decimal  # sum over the open high-severity recommendations
    daily_series: tuple[DailyCostPoint, ...] = field(default=())  # 7 days ending report_date
    gap_days: tuple[dt.date, ...] = ()  # days of the 30 with no usage rows at all (not $0 days)
    # Resolved idle GPUs' hourly cost x their hours not spent this local month, through
    # report_date (detections/resolution.py); None: not computed (the stored summary alone).
    savings_realized_month_usd: Decimal | None = None
    # MONTHLY_BUDGET_USD set: the local month of report_date through it, and its forecast
    # (month to date + the 7-day daily mean ending report_date x the days left); else None.
    monthly_budget_usd: Decimal | None = None
    month_to_date_usd: Decimal | None = None
    month_forecast_usd: Decimal | None = None
    rightsizing_count: int = 0  # open rightsizing recommendations (medium: advice, not fires)
    rightsizing_savings_monthly_usd: Decimal = Decimal(0)
