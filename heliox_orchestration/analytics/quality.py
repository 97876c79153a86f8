"""Data-quality rules behind the asset checks: each rule is a SQL condition on a table's rows,
counted in one aggregate query and illustrated by a few sample rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, case, func, or_, select

from heliox_orchestration.analytics.common import as_int
from heliox_orchestration.analytics.idle import severity_sql
from heliox_orchestration.db.schema import (
    daily_gpu_cost_days,
    daily_gpu_costs,
    gpu_usage_hourly,
    idle_gpu_recommendations,
)

SAMPLE_ROWS = 5


def _blank(*columns: ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(*(or_(c.is_(None), func.trim(c) == "") for c in columns))


def usage_rules() -> dict[str, ColumnElement[bool]]:
    u = gpu_usage_hourly.c
    return {
        "negative cost_usd": u.cost_usd < 0,
        "gpu_utilization_pct outside 0-100": or_(u.gpu_utilization_pct < 0, u.gpu_utilization_pct > 100),
        "NULL or blank key (resource_id, provider, gpu_type)": _blank(u.resource_id, u.provider, u.gpu_type),
    }


def daily_cost_rules() -> dict[str, ColumnElement[bool]]:
    c = daily_gpu_costs.c
    return {
        "negative cost_usd": c.cost_usd < 0,
        "avg_utilization_pct outside 0-100": or_(c.avg_utilization_pct < 0, c.avg_utilization_pct > 100),
        "NULL or blank key (provider, gpu_type)": _blank(c.provider, c.gpu_type),
    }


def idle_finding_rules() -> dict[str, ColumnElement[bool]]:
    c = idle_gpu_recommendations.c
    return {
        "negative monthly_savings_usd": c.monthly_savings_usd < 0,
        "idle_pct outside 0-100": or_(c.idle_pct < 0, c.idle_pct > 100),
        "severity does not match idle_days": c.severity != severity_sql(c.idle_days),
        "streak longer than the observed hours": c.streak_hours > c.observed_hours,
        "NULL or blank key (resource_id, provider, gpu_type)": _blank(c.resource_id, c.provider, c.gpu_type),
    }


@dataclass(frozen=True)
class RuleReport:
    rows_checked: int
    violations: Mapping[str, int]
    samples: Sequence[Mapping[str, Any]] = field(default=())

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())

    def summary(self) -> str:
        return ", ".join(
            f"{n:,} row{'s' if n != 1 else ''} with {rule}" for rule, n in self.violations.items() if n
        )


def evaluate_rules(
    engine: Engine,
    table: Table,
    rules: Mapping[str, ColumnElement[bool]],
    scope: ColumnElement[bool],
    sample_columns: Sequence[str],
    order_by: Sequence[str],
) -> RuleReport:
    """Count the rows in ``scope`` breaking each rule (one scan), then fetch a few examples."""
    counts = [func.coalesce(func.sum(case((rule, 1), else_=0)), 0) for rule in rules.values()]
    with engine.connect() as conn:
        checked, *broken = conn.execute(select(func.count(), *counts).select_from(table).where(scope)).one()
        violations = dict(zip(rules, (as_int(n) for n in broken), strict=True))
        samples: list[Mapping[str, Any]] = []
        if any(violations.values()):
            samples = [
                dict(r)
                for r in conn.execute(
                    select(*(table.c[name] for name in sample_columns))
                    .where(scope, or_(*rules.values()))
                    .order_by(*(table.c[name] for name in order_by))
                    .limit(SAMPLE_ROWS)
                ).mappings()
            ]
    return RuleReport(as_int(checked), violations, samples)


def usage_rule_report(engine: Engine, start: dt.datetime, end: dt.datetime) -> RuleReport:
    u = gpu_usage_hourly.c
    return evaluate_rules(
        engine,
        gpu_usage_hourly,
        usage_rules(),
        (u.usage_hour >= start) & (u.usage_hour < end),
        ["resource_id", "usage_hour", "provider", "gpu_type", "cost_usd", "gpu_utilization_pct"],
        ["usage_hour", "resource_id"],
    )


def future_usage_report(engine: Engine, now: dt.datetime) -> RuleReport:
    """Rows whose hour has not started yet: usually local time stored as UTC by an importer,
    which would shift every day's total."""
    u = gpu_usage_hourly.c
    future = u.usage_hour > now
    return evaluate_rules(
        engine,
        gpu_usage_hourly,
        {"usage_hour later than now": future},
        future,
        ["resource_id", "usage_hour", "provider", "gpu_type", "cost_usd"],
        ["usage_hour", "resource_id"],
    )


def daily_cost_rule_report(engine: Engine, first: dt.date, last: dt.date) -> RuleReport:
    c = daily_gpu_costs.c
    return evaluate_rules(
        engine,
        daily_gpu_costs,
        daily_cost_rules(),
        c.day.between(first, last),
        ["day", "provider", "gpu_type", "model_name", "cost_usd", "avg_utilization_pct"],
        ["day", "provider", "gpu_type"],
    )


def idle_finding_rule_report(engine: Engine, evaluated_at: dt.datetime) -> RuleReport:
    c = idle_gpu_recommendations.c
    return evaluate_rules(
        engine,
        idle_gpu_recommendations,
        idle_finding_rules(),
        c.evaluated_at == evaluated_at,
        ["resource_id", "severity", "idle_days", "idle_pct", "streak_hours", "monthly_savings_usd"],
        ["resource_id"],
    )


def gap_days(engine: Engine, first: dt.date, last: dt.date, now: dt.datetime) -> list[dt.date]:
    """Materialized days that have ended and had no usage rows at all (a day still in progress
    is not judged)."""
    d = daily_gpu_cost_days.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(d.day)
                .where(d.day.between(first, last), d.has_data.is_(False), d.end_utc <= now)
                .order_by(d.day)
            ).scalars()
        )
