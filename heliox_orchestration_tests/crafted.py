"""Crafted usage rows with known answers, and independent SQL sums to check results against."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select, text

from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.money import CENTS


def utc(year: int, month: int, day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=dt.UTC)


def row(
    resource_id: str,
    usage_hour: dt.datetime,
    cost: str | Decimal,
    util: float | None = 50.0,
    *,
    provider: str = "aws",
    gpu_type: str = "H100",
    model_name: str | None = "GPT-4",
    gpu_count: int = 1,
    region: str | None = "us-east-1",
    team: str | None = "llm",
    pricing_category: str | None = None,
) -> dict[str, Any]:
    return {
        "resource_id": resource_id,
        "usage_hour": usage_hour,
        "provider": provider,
        "region": region,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "model_name": model_name,
        "team": team,
        "cost_usd": Decimal(cost),
        "gpu_utilization_pct": util,
        "pricing_category": pricing_category,
    }


def hourly(
    resource_id: str, start: dt.datetime, hours: int, cost: str | Decimal, util: float | None, **attrs: Any
) -> list[dict[str, Any]]:
    """``hours`` consecutive hourly rows of one resource from ``start``."""
    return [row(resource_id, start + dt.timedelta(hours=i), cost, util, **attrs) for i in range(hours)]


def insert(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    with engine.begin() as conn:
        conn.execute(gpu_usage_hourly.insert(), rows)


def db_sum_cents(engine: Engine, start: dt.datetime, end: dt.datetime) -> Decimal:
    """The database's own ``SUM(cost_usd)`` for [start, end), to the cent (REAL on SQLite)."""
    u = gpu_usage_hourly.c
    with engine.connect() as conn:
        total = conn.execute(
            select(func.sum(u.cost_usd)).where(u.usage_hour >= start, u.usage_hour < end)
        ).scalar_one()
    return Decimal(str(total or 0)).quantize(CENTS)


def db_sum_by_model_cents(engine: Engine, start: dt.datetime, end: dt.datetime) -> dict[str | None, Decimal]:
    u = gpu_usage_hourly.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(u.model_name, func.sum(u.cost_usd))
            .where(u.usage_hour >= start, u.usage_hour < end)
            .group_by(u.model_name)
        ).all()
    return {model: Decimal(str(total)).quantize(CENTS) for model, total in rows}


def table_count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def engine_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)
