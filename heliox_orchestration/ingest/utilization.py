"""Telemetry in the database: ``gpu_utilization_hourly``, its join with the cost rows, reports.

An asset (or ``heliox import-prometheus``) needs three calls::

    report = ingest_utilization(engine, client, mapping, start, end, progress=...)
    filled = fill_usage_utilization(engine, start, end)        # also after each cost import
    join = utilization_join_report(engine, start, end)

* ``ingest_utilization`` replaces the telemetry of each chunk of hours in one transaction (every
  resource's rows of those hours, so a re-run, or a backfill of the same hours, is idempotent).
* ``fill_usage_utilization`` copies the telemetry into ``gpu_usage_hourly.gpu_utilization_pct``
  for the cost rows of the same resource and hour, one day per transaction. A cost row without
  telemetry keeps what it has (usually NULL: "utilization unknown", which the idle rule never
  counts as idle); nothing is ever overwritten with NULL.
* ``utilization_join_report``: cost without telemetry (utilization unknown, per resource) and
  telemetry without cost ("a GPU the billing does not know", per resource, with its GPUs),
  the latter only up to the newest billed hour, since cost exports lag telemetry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, delete, exists, func, or_, select, text, update

from heliox_orchestration.db.schema import (
    gpu_resources,
    gpu_usage_hourly,
    gpu_usage_rows,
    gpu_utilization_hourly,
    money_sum_micros,
)
from heliox_orchestration.db.usage_store import newest_usage_hour_before
from heliox_orchestration.ingest.dcgm_mapping import DcgmMapping
from heliox_orchestration.ingest.prometheus import PrometheusClient
from heliox_orchestration.ingest.telemetry import (
    FetchStats,
    Progress,
    UtilizationChunk,
    check_hour_range,
    fetch_utilization,
    hour_chunks,
)
from heliox_orchestration.money import format_usd, micros_to_dollars

FILL_CHUNK_HOURS = 24
# Any fixed 64-bit number, other than ingest.pending's: "HXUTIL" in ASCII.
UTILIZATION_WRITE_LOCK = 0x48585554494C


@dataclass
class IngestReport:
    start: dt.datetime
    end: dt.datetime
    stats: FetchStats = field(default_factory=FetchStats)
    rows_written: int = 0
    rows_replaced: int = 0
    resources: set[str] = field(default_factory=set)
    first_hour: dt.datetime | None = None
    last_hour: dt.datetime | None = None
    expected_samples_per_hour: float = 0.0

    def warnings(self) -> list[str]:
        out = []
        observed, expected = self.stats.max_samples_per_gpu_hour, self.expected_samples_per_hour
        if observed > expected * 1.1:
            out.append(
                f"up to {observed} samples of one GPU in an hour, {expected:g} expected: if GPUs are "
                "scraped more often than scrape_interval_seconds says, set it to the real interval, "
                "or partly scraped hours count as fully scraped."
            )
        return out

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster output metadata."""
        s = self.stats
        return {
            "queries": s.requests,
            "gpu_series": len(s.series),
            "gpu_hours_counted": s.gpu_hours,
            "gpu_hours_low_coverage": s.gpu_hours_low_coverage,
            "gpu_hours_invalid": s.gpu_hours_invalid,
            "resource_hours_written": self.rows_written,
            "resource_hours_replaced": self.rows_replaced,
            "resources": len(self.resources),
            "warnings": "; ".join(self.warnings()) or "none",
        }

    def lines(self) -> list[str]:
        s = self.stats
        span = (
            f"{self.first_hour:%Y-%m-%d %H:%M} to {self.last_hour:%Y-%m-%d %H:%M} UTC"
            if self.first_hour and self.last_hour
            else "no hours with data"
        )
        return [
            f"Read {len(s.series):,} GPU series in {s.requests:,} queries, "
            f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC",
            f"  counted: {s.gpu_hours:,} GPU-hours; not counted: {s.gpu_hours_low_coverage:,} scraped "
            f"less than the minimum coverage, {s.gpu_hours_invalid:,} with values outside 0-100",
            f"Wrote {self.rows_written:,} resource-hours of {len(self.resources):,} resources ({span}); "
            f"replaced {self.rows_replaced:,}",
            *(f"Warning: {w}" for w in self.warnings()),
        ]


def replace_utilization_hours(engine: Engine, chunk: UtilizationChunk, fetched_at: dt.datetime) -> int:
    """Replace every stored row of the chunk's hours with the chunk's rows, in one transaction;
    returns the number of rows deleted."""
    t = gpu_utilization_hourly
    hours = chunk.hours.astype(object).where(chunk.hours.notna(), None)
    records: list[dict[str, Any]] = [
        {
            **{str(k): v for k, v in r.items()},
            "usage_hour": r["usage_hour"].to_pydatetime(),
            "fetched_at": fetched_at,
        }
        for r in hours.to_dict("records")
    ]
    for r in records:
        r["gpus"] = int(r["gpus"])
        r["utilization_pct"] = float(r["utilization_pct"])
        r["coverage"] = float(r["coverage"])
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two pulls of the same hours (the hourly schedule and a backfill) take turns: each
            # replaces the hours whole, instead of the second failing on the first's new rows.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UTILIZATION_WRITE_LOCK})
        deleted = conn.execute(
            delete(t).where(t.c.usage_hour >= chunk.start, t.c.usage_hour < chunk.end)
        ).rowcount
        if records:
            conn.execute(t.insert(), records)
    return deleted or 0


def ingest_utilization(
    engine: Engine,
    client: PrometheusClient,
    mapping: DcgmMapping,
    start: dt.datetime,
    end: dt.datetime,
    progress: Progress | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> IngestReport:
    """Fetch the hours [start, end) from Prometheus and store them, chunk by chunk."""
    report = IngestReport(start, end, expected_samples_per_hour=mapping.expected_samples_per_hour)
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    for chunk in fetch_utilization(client, mapping, start, end, progress):
        report.rows_replaced += replace_utilization_hours(engine, chunk, clock())
        report.stats.add(chunk.stats)
        report.rows_written += len(chunk.hours)
        if len(chunk.hours):
            report.resources.update(chunk.hours["resource_id"])
            first, last = (
                chunk.hours["usage_hour"].min().to_pydatetime(),
                chunk.hours["usage_hour"].max().to_pydatetime(),
            )
            report.first_hour = min(report.first_hour or first, first)
            report.last_hour = max(report.last_hour or last, last)
    return report


@dataclass(frozen=True)
class FillReport:
    utilization_rows: int  # cost rows whose utilization was set or changed
    attributed_rows: int = 0  # cost rows given a model name or team they lacked


def fill_usage_utilization(
    engine: Engine,
    start: dt.datetime,
    end: dt.datetime,
    *,
    attribute_workloads: bool = False,
    progress: Progress | None = None,
) -> FillReport:
    """Copy telemetry into the cost rows of [start, end), one day per transaction.

    ``gpu_utilization_pct`` is set where a telemetry row exists and differs; never set to NULL.
    With ``attribute_workloads``, a cost row without ``model_name`` (or ``team``) takes the
    telemetry's, when it has one; a value the cost export set is never replaced."""
    check_hour_range(start, end)
    # The stored rows themselves (the view's triggers would change one row at a time).
    u, t, r = gpu_usage_rows, gpu_utilization_hourly, gpu_resources
    same = and_(
        r.c.resource_key == u.c.resource_key,
        t.c.resource_id == r.c.resource_id,
        t.c.usage_hour == u.c.usage_hour,
    )

    def from_telemetry(column: Any) -> Any:
        return select(column).where(same).scalar_subquery()

    chunks = hour_chunks(start, end, FILL_CHUNK_HOURS)
    utilization = attributed = 0
    for i, (s, e) in enumerate(chunks):
        in_range = and_(u.c.usage_hour >= s, u.c.usage_hour < e)
        with engine.begin() as conn:
            changed = or_(u.c.gpu_utilization_pct.is_(None), u.c.gpu_utilization_pct != t.c.utilization_pct)
            utilization += (
                conn.execute(
                    update(u)
                    .values(gpu_utilization_pct=from_telemetry(t.c.utilization_pct))
                    .where(in_range, exists().where(same, changed))
                ).rowcount
                or 0
            )
            if attribute_workloads:
                for target, source in ((u.c.model_name, t.c.model_name), (u.c.team, t.c.team)):
                    attributed += (
                        conn.execute(
                            update(u)
                            .values({target: from_telemetry(source)})
                            .where(in_range, target.is_(None), exists().where(same, source.is_not(None)))
                        ).rowcount
                        or 0
                    )
        if progress:
            progress(i + 1, len(chunks))
    return FillReport(utilization, attributed)


@dataclass(frozen=True)
class UnknownUtilization:
    """A billed resource with hours that have no telemetry: utilization unknown, never idle."""

    resource_id: str
    provider: str
    gpu_type: str
    hours: int
    cost_usd: Decimal
    first_hour: dt.datetime
    last_hour: dt.datetime


@dataclass(frozen=True)
class UnbilledGpu:
    """A resource with telemetry but no cost row in those hours: a GPU the billing does not know."""

    resource_id: str
    resource_label: str  # the telemetry label that names it (latest hour's)
    gpus: int  # GPUs in its latest hour
    gpu_type: str | None
    hours: int
    first_hour: dt.datetime
    last_hour: dt.datetime


@dataclass(frozen=True)
class JoinReport:
    start: dt.datetime
    end: dt.datetime
    billed_hours: int  # cost rows (resource-hours) in the range
    billed_with_telemetry: int
    billed_through: dt.datetime | None  # end of the newest billed hour, all resources
    telemetry_hours_not_yet_billed: int  # telemetry after billed_through: not judged
    unknown: list[UnknownUtilization]
    unbilled: list[UnbilledGpu]

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster output metadata (the lists as text, at most 20 lines each)."""
        lines = self.lines()
        return {
            "billed_resource_hours": self.billed_hours,
            "billed_with_telemetry": self.billed_with_telemetry,
            "unknown_utilization_resource_hours": sum(r.hours for r in self.unknown),
            "unknown_utilization_cost_usd": str(sum((r.cost_usd for r in self.unknown), Decimal(0))),
            "gpus_billing_does_not_know": len(self.unbilled),
            "billed_through": self.billed_through.isoformat() if self.billed_through else "none",
            "report": "\n".join(lines),
        }

    def lines(self) -> list[str]:
        unknown_hours = sum(r.hours for r in self.unknown)
        unknown_cost = sum((r.cost_usd for r in self.unknown), Decimal(0))
        out = [
            f"Cost rows {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC: {self.billed_hours:,} "
            f"resource-hours, {self.billed_with_telemetry:,} with telemetry",
            f"Utilization unknown (cost, no telemetry): {unknown_hours:,} resource-hours of "
            f"{len(self.unknown):,} resources, {format_usd(unknown_cost)}",
        ]
        out += [
            f"  {r.resource_id} ({r.provider} {r.gpu_type}): {r.hours:,} hours, {format_usd(r.cost_usd)}"
            for r in self.unknown[:20]
        ]
        through = f"{self.billed_through:%Y-%m-%d %H:%M} UTC" if self.billed_through else "no cost rows"
        out.append(
            f"GPUs the billing does not know (telemetry, no cost; billed through {through}): "
            f"{len(self.unbilled):,}"
        )
        out += [
            f"  {g.resource_label} -> {g.resource_id}: {g.gpus} x {g.gpu_type or 'unknown GPU'}, "
            f"{g.hours:,} hours"
            for g in self.unbilled[:20]
        ]
        if self.telemetry_hours_not_yet_billed:
            out.append(
                f"  ({self.telemetry_hours_not_yet_billed:,} telemetry resource-hours are newer than "
                "the billing: not judged yet)"
            )
        return out


def utilization_join_report(engine: Engine, start: dt.datetime, end: dt.datetime) -> JoinReport:
    """How cost rows and telemetry of [start, end) match (see the module docstring)."""
    check_hour_range(start, end)
    u, t = gpu_usage_hourly, gpu_utilization_hourly
    same = and_(t.c.resource_id == u.c.resource_id, t.c.usage_hour == u.c.usage_hour)
    u_range = and_(u.c.usage_hour >= start, u.c.usage_hour < end)
    with engine.connect() as conn:
        billed_hours, with_telemetry = conn.execute(
            select(func.count(), func.count(t.c.resource_id)).select_from(u.outerjoin(t, same)).where(u_range)
        ).one()
        # The newest hour of all: a later one is found among the hours after ``end`` (a few
        # recent block ranges), else the nearest range before it; never a scan of the history.
        later = conn.execute(select(func.max(u.c.usage_hour)).where(u.c.usage_hour >= end)).scalar_one()
        newest = later or newest_usage_hour_before(conn, end)
        billed_through = newest + dt.timedelta(hours=1) if newest else None
        unknown_rows = conn.execute(
            select(
                u.c.resource_id,
                func.min(u.c.provider),
                func.min(u.c.gpu_type),
                func.count(),
                money_sum_micros(u.c.cost_usd),
                func.min(u.c.usage_hour),
                func.max(u.c.usage_hour),
            )
            .where(u_range, ~exists().where(same))
            .group_by(u.c.resource_id)
        ).all()
        judged_end = min(end, billed_through) if billed_through else start
        t_range = and_(t.c.usage_hour >= start, t.c.usage_hour < judged_end)
        per_resource = (
            select(
                t.c.resource_id,
                func.count().label("hours"),
                func.min(t.c.usage_hour).label("first_hour"),
                func.max(t.c.usage_hour).label("last_hour"),
            )
            .where(t_range, ~exists().where(same))
            .group_by(t.c.resource_id)
            .subquery()
        )
        latest = and_(
            t.c.resource_id == per_resource.c.resource_id, t.c.usage_hour == per_resource.c.last_hour
        )
        unbilled_rows = conn.execute(
            select(
                per_resource.c.resource_id,
                t.c.resource_label,
                t.c.gpus,
                t.c.gpu_type,
                per_resource.c.hours,
                per_resource.c.first_hour,
                per_resource.c.last_hour,
            ).select_from(per_resource.join(t, latest))
        ).all()
        not_yet = conn.execute(
            select(func.count())
            .select_from(t)
            .where(t.c.usage_hour >= max(start, judged_end), t.c.usage_hour < end)
        ).scalar_one()
    unknown = [
        UnknownUtilization(r[0], r[1], r[2], int(r[3]), micros_to_dollars(int(r[4])), r[5], r[6])
        for r in unknown_rows
    ]
    unknown.sort(key=lambda r: (-r.cost_usd, r.resource_id))
    unbilled = [UnbilledGpu(r[0], r[1], int(r[2]), r[3], int(r[4]), r[5], r[6]) for r in unbilled_rows]
    unbilled.sort(key=lambda g: (-g.hours, g.resource_id))
    return JoinReport(
        start, end, int(billed_hours), int(with_telemetry), billed_through, int(not_yet), unknown, unbilled
    )
