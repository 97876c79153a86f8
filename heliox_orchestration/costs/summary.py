"""The report models of the Slack messages (``heliox_orchestration.reports``), built from cost
aggregates.

Each report has two ways in:

* ``burn_rate_status`` / ``cost_summary`` compute from ``gpu_usage_hourly`` directly, for any
  date and with no prior materialization (``heliox preview``, tests);
* ``load_burn_rate_status`` / ``load_cost_summary`` read what the assets materialized (the alert
  jobs, after the asset checks passed) and raise ``NotMaterializedError`` when it is missing.

Both go through the same pure builders (``burn_rate_from`` and ``build_cost_summary``), so they
agree to the micro-dollar whenever the materialization is current.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
from sqlalchemy import Engine, delete, select

from heliox_orchestration.costs.budget_spend import budgets
from heliox_orchestration.costs.common import NotMaterializedError, model_label, records_of
from heliox_orchestration.costs.daily_costs import (
    DailyCosts,
    LocalDay,
    compute_daily_costs,
    require_materialized,
)
from heliox_orchestration.db.schema import gpu_cost_summary, gpu_cost_summary_items
from heliox_orchestration.detections.idle import compute_idle_evaluation
from heliox_orchestration.money import MICROS, micros_to_dollars
from heliox_orchestration.reports import (
    BurnRateStatus,
    CostDriver,
    CostSummary,
    DailyCostPoint,
    IdleFinding,
    RightsizingFinding,
)
from heliox_orchestration.settings import Settings

TOP_N = 3
SERIES_DAYS = 7
SUMMARY_DAYS = 30


def top_drivers(rows: pd.DataFrame, n: int = TOP_N) -> tuple[CostDriver, ...]:
    """The ``n`` most expensive models of ``rows`` (NULL model names as "Unattributed")."""
    totals: dict[str, int] = {}
    for model, micros in zip(rows["model_name"], rows["cost_micros"], strict=True):
        label = model_label(model)
        totals[label] = totals.get(label, 0) + int(micros)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:n]
    return tuple(CostDriver(label, micros_to_dollars(micros)) for label, micros in ranked)


# --- burn rate -------------------------------------------------------------------------------


def burn_rate_from(
    costs: DailyCosts, day: dt.date, settings: Settings, now: dt.datetime | None = None
) -> BurnRateStatus:
    """The burn-rate status of ``day`` from its aggregates; for today, also the elapsed hours
    with data and the end-of-day projection at the day's hourly rate so far."""
    of_day = costs.for_days(day, day)
    if not of_day.days:
        raise ValueError(f"{day} is not among the aggregated days {costs.first}..{costs.last}")
    totals = of_day.day_totals().iloc[0]
    local_day = of_day.days[0]
    status = BurnRateStatus(
        day=day,
        cost_usd=totals["cost_usd"],
        threshold_usd=settings.burn_rate_threshold_usd,
        top_drivers=top_drivers(of_day.rows),
        is_today=day == settings.today(now),
        hours_in_day=local_day.hours,
        has_data=bool(totals["has_data"]),
    )
    if not status.is_today:
        return status
    elapsed = _hours_with_data(local_day, totals["last_usage_hour"])
    projected = (
        (status.cost_usd / elapsed * local_day.hours).quantize(MICROS, rounding=ROUND_HALF_UP)
        if elapsed
        else None
    )
    return replace(status, hours_elapsed=Decimal(elapsed), projected_cost_usd=projected)


def _hours_with_data(day: LocalDay, last_usage_hour: dt.datetime | None) -> int:
    """Elapsed hours from local midnight through the last hour with data. Both ends are UTC,
    so at 11:00 on the 23-hour DST day this is 11 - 1 = 10, not the wall clock's 11."""
    if last_usage_hour is None:
        return 0
    return min(day.hours, int((last_usage_hour + dt.timedelta(hours=1) - day.start) / dt.timedelta(hours=1)))


def burn_rate_status(
    engine: Engine, day: dt.date, settings: Settings, now: dt.datetime | None = None
) -> BurnRateStatus:
    """``day``'s spend (so far, for today) computed from ``gpu_usage_hourly``: no prior
    materialization needed. ``load_burn_rate_status`` reads the ``daily_gpu_costs`` asset."""
    return burn_rate_from(compute_daily_costs(engine, day, day, settings.timezone), day, settings, now)


def load_burn_rate_status(
    engine: Engine, day: dt.date, settings: Settings, now: dt.datetime | None = None
) -> BurnRateStatus:
    """``day``'s spend as materialized by the ``daily_gpu_costs`` asset (the alert path);
    raises ``NotMaterializedError`` when that partition was never materialized."""
    return burn_rate_from(require_materialized(engine, day, day, settings.timezone), day, settings, now)


# --- daily summary ---------------------------------------------------------------------------


def summary_range(report_date: dt.date) -> tuple[dt.date, dt.date]:
    """The 30 local days ending with ``report_date``: every number of the summary lies in them."""
    return report_date - dt.timedelta(days=SUMMARY_DAYS - 1), report_date


def build_cost_summary(
    report_date: dt.date,
    costs: DailyCosts,
    findings: Sequence[IdleFinding],
    rightsizing: Sequence[RightsizingFinding] = (),
) -> CostSummary:
    """The summary numbers from 30 days of aggregates and the open recommendations. Its
    potential savings are those of the high-severity ones it counts: the findings the idle alert
    sends, so both messages show one figure for the same GPUs (README, "One savings figure")."""
    first, last = summary_range(report_date)
    window = costs.for_days(first, last)
    if len(window.days) != SUMMARY_DAYS:
        raise ValueError(f"the summary of {report_date} needs the days {first}..{last}")
    totals = window.day_totals()
    micros = dict(zip(totals["day"], totals["cost_micros"], strict=True))
    has_data = dict(zip(totals["day"], totals["has_data"], strict=True))
    series_days = [report_date - dt.timedelta(days=i) for i in range(SERIES_DAYS - 1, -1, -1)]
    high = [f for f in findings if f.severity == "high"]
    return CostSummary(
        report_date=report_date,
        yesterday_cost_usd=micros_to_dollars(micros[report_date]),
        last_7_days_cost_usd=micros_to_dollars(sum(micros[d] for d in series_days)),
        last_30_days_cost_usd=micros_to_dollars(sum(micros.values())),
        top_models=top_drivers(window.for_days(report_date, report_date).rows),
        high_severity_count=len(high),
        potential_savings_monthly_usd=sum((f.monthly_savings_usd for f in high), Decimal(0)),
        daily_series=tuple(
            DailyCostPoint(d, micros_to_dollars(micros[d]), has_data=bool(has_data[d])) for d in series_days
        ),
        gap_days=tuple(d for d in sorted(has_data) if not has_data[d]),
        rightsizing_count=len(rightsizing),
        rightsizing_savings_monthly_usd=sum((r.monthly_savings_usd for r in rightsizing), Decimal(0)),
    )


def cost_summary(
    engine: Engine, report_date: dt.date, settings: Settings, as_of: dt.datetime | None = None
) -> CostSummary:
    """The daily summary of ``report_date`` computed from ``gpu_usage_hourly``: the 30 days of
    costs and the idle findings evaluated at ``as_of`` (default: now), with no prior
    materialization. ``load_cost_summary`` reads the ``gpu_cost_summary`` asset instead."""
    first, last = summary_range(report_date)
    costs = compute_daily_costs(engine, first, last, settings.timezone)
    evaluation = compute_idle_evaluation(engine, settings, as_of)
    summary = build_cost_summary(report_date, costs, evaluation.to_findings(), evaluation.to_rightsizing())
    return with_month_budget(engine, summary, settings, as_of or dt.datetime.now(dt.UTC))


def with_month_budget(
    engine: Engine, summary: CostSummary, settings: Settings, now: dt.datetime
) -> CostSummary:
    """The summary with the fleet's month to date, budget and forecast (MONTHLY_BUDGET_USD set)."""
    if settings.monthly_budget_usd is None:
        return summary
    fleet = budgets(engine, summary.report_date, replace(settings, teams=()), now, complete=True)
    status = fleet.statuses.get(None)
    if status is None:
        return summary
    return replace(
        summary,
        monthly_budget_usd=status.budget_usd,
        month_to_date_usd=status.month_to_date_usd,
        month_forecast_usd=status.forecast_usd,
    )


@dataclass(frozen=True)
class StoredSummary:
    summary: CostSummary
    timezone: str
    recommendations_as_of: dt.datetime | None
    computed_at: dt.datetime


def write_cost_summary(engine: Engine, stored: StoredSummary, series: DailyCosts) -> None:
    """Replace the stored summary of its report date in one transaction; ``series`` are its 30
    days, kept as ``day`` items so a dashboard (and the loader) can show gaps."""
    s = stored.summary
    totals = series.day_totals()
    items = [
        {
            "kind": "top_model",
            "position": i,
            "label": d.label,
            "day": None,
            "cost_usd": d.cost_usd,
            "has_data": True,
        }
        for i, d in enumerate(s.top_models, start=1)
    ] + [
        {
            "kind": "day",
            "position": i,
            "label": None,
            "day": r["day"],
            "cost_usd": r["cost_usd"],
            "has_data": r["has_data"],
        }
        for i, r in enumerate(records_of(totals), start=1)
    ]
    with engine.begin() as conn:
        for table in (gpu_cost_summary_items, gpu_cost_summary):
            conn.execute(delete(table).where(table.c.report_date == s.report_date))
        conn.execute(
            gpu_cost_summary.insert().values(
                report_date=s.report_date,
                timezone=stored.timezone,
                yesterday_cost_usd=s.yesterday_cost_usd,
                last_7_days_cost_usd=s.last_7_days_cost_usd,
                last_30_days_cost_usd=s.last_30_days_cost_usd,
                days_with_data_30=int(totals["has_data"].sum()),
                high_severity_count=s.high_severity_count,
                potential_savings_monthly_usd=s.potential_savings_monthly_usd,
                rightsizing_count=s.rightsizing_count,
                rightsizing_savings_monthly_usd=s.rightsizing_savings_monthly_usd,
                recommendations_as_of=stored.recommendations_as_of,
                computed_at=stored.computed_at,
                monthly_budget_usd=s.monthly_budget_usd,
                month_to_date_usd=s.month_to_date_usd,
                month_forecast_usd=s.month_forecast_usd,
            )
        )
        conn.execute(
            gpu_cost_summary_items.insert(), [{**item, "report_date": s.report_date} for item in items]
        )


def load_cost_summary(engine: Engine, report_date: dt.date) -> CostSummary:
    """The summary of ``report_date`` as materialized by the ``gpu_cost_summary`` asset;
    raises ``NotMaterializedError`` when it was never materialized for that date."""
    with engine.connect() as conn:
        row = conn.execute(
            select(gpu_cost_summary).where(gpu_cost_summary.c.report_date == report_date)
        ).first()
        if row is None:
            raise NotMaterializedError(
                f"gpu_cost_summary has no materialization for report date {report_date}; "
                "materialize it with that report_date first."
            )
        items = conn.execute(
            select(gpu_cost_summary_items)
            .where(gpu_cost_summary_items.c.report_date == report_date)
            .order_by(gpu_cost_summary_items.c.kind, gpu_cost_summary_items.c.position)
        ).all()
    days = [DailyCostPoint(i.day, i.cost_usd, has_data=i.has_data) for i in items if i.kind == "day"]
    return CostSummary(
        report_date=report_date,
        yesterday_cost_usd=row.yesterday_cost_usd,
        last_7_days_cost_usd=row.last_7_days_cost_usd,
        last_30_days_cost_usd=row.last_30_days_cost_usd,
        top_models=tuple(CostDriver(i.label, i.cost_usd) for i in items if i.kind == "top_model"),
        high_severity_count=row.high_severity_count,
        potential_savings_monthly_usd=row.potential_savings_monthly_usd,
        rightsizing_count=row.rightsizing_count or 0,  # NULL: stored before rightsizing existed
        rightsizing_savings_monthly_usd=row.rightsizing_savings_monthly_usd or Decimal(0),
        daily_series=tuple(days[-SERIES_DAYS:]),
        gap_days=tuple(p.day for p in days if not p.has_data),
        monthly_budget_usd=row.monthly_budget_usd,
        month_to_date_usd=row.month_to_date_usd,
        month_forecast_usd=row.month_forecast_usd,
    )
