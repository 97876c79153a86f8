"""The idle rule (and rightsizing) read from the daily rollup instead of the raw hours.

The window is the same ``IDLE_LOOKBACK_DAYS`` x 24 completed hours as the raw-row rule
(``detections.idle``), cut at local-day edges in ``TIMEZONE`` into segments: each whole local
day with a usable rollup row (``costs.rollup.usable_rollup_days``) is read from
``daily_resource_usage``; the partial days at both ends of the window and any day without a
usable rollup are aggregated from ``gpu_usage_hourly`` by the same per-segment query the rollup
is written with. Per resource the segments then add up to exactly the raw rule's numbers:

* observed and idle hours are sums; the last observed and last active hours are maxima;
* the trailing idle streak is the idle tail (rows after the segment's last active hour) of the
  segment holding the resource's last active hour, plus every row of the later segments (which
  have no active hour, so their tail is all their rows); with no active hour at all, every
  segment's rows. Its rows, cost and first hour are sums and a minimum of the segments' tails.

The data-quality rules run on the raw segments only: a rolled-up day passed them when the
``daily_gpu_costs`` refresh wrote it (a refused refresh drops the day's rollup).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Numeric,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
    union_all,
)

from heliox_orchestration.costs.quality import RuleReport
from heliox_orchestration.costs.rollup import (
    Segment,
    segment_rows_query,
    stored_rows_query,
    usable_rollup_days,
)
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings


def window_segments(
    start: dt.datetime, end: dt.datetime, timezone: str
) -> tuple[list[Segment], list[Segment]]:
    """(whole local days, partial days) covering the UTC hours [start, end)."""
    tz = ZoneInfo(timezone)
    first = start.astimezone(tz).date()
    last = (end - dt.timedelta(hours=1)).astimezone(tz).date()
    whole: list[Segment] = []
    partial: list[Segment] = []
    day = first
    while day <= last:
        day_start, day_end = local_day_bounds(day, timezone)
        a, b = max(start, day_start), min(end, day_end)
        if a < b:
            (whole if (a, b) == (day_start, day_end) else partial).append(Segment(day, a, b))
        day += dt.timedelta(days=1)
    return whole, partial


def plan_segments(
    conn: Connection, start: dt.datetime, end: dt.datetime, settings: Settings
) -> tuple[list[dt.date], list[Segment]]:
    """(rolled-up days to read, segments to aggregate from the raw rows)."""
    whole, partial = window_segments(start, end, settings.timezone)
    usable = usable_rollup_days(conn, whole, settings.timezone, settings.idle_utilization_pct)
    raw = sorted([s for s in whole if s.day not in usable] + partial, key=lambda s: s.start)
    return sorted(usable), raw


def raw_ranges(segments: Sequence[Segment]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Contiguous UTC ranges of the raw segments (one rule scan each)."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for s in sorted(segments, key=lambda s: s.start):
        if ranges and ranges[-1][1] == s.start:
            ranges[-1] = (ranges[-1][0], s.end)
        else:
            ranges.append((s.start, s.end))
    return ranges


def rollup_candidates_query(
    rollup_days: Sequence[dt.date],
    raw_segments: Sequence[Segment],
    settings: Settings,
    withheld: Select[tuple[str]] | CompoundSelect[tuple[str]] | None = None,
) -> Select:
    """Per resource: the idle rule's counts and streak (as ``idle_candidates_query`` returns
    them), the window's cost, GPU-hours, utilization sums, peak load and committed rows, and the
    attributes of its last observed row; only idle findings and rightsizing candidates."""
    parts: list[Select] = []
    if rollup_days:
        parts.append(stored_rows_query(rollup_days))
    if raw_segments:
        parts.append(segment_rows_query(raw_segments, settings.idle_utilization_pct))
    if not parts:
        raise ValueError("an idle window has at least one hour")
    segs = (parts[0] if len(parts) == 1 else union_all(*parts)).cte("segments")
    share_n, share_d = settings.idle_min_idle_share_pct.as_integer_ratio()
    observed, idle = func.sum(segs.c.usage_rows), func.sum(segs.c.idle_rows)
    last_observed, last_active = func.max(segs.c.last_observed_hour), func.max(segs.c.last_active_hour)
    util_x, util_gpu_hours = func.sum(segs.c.utilization_x_gpu_hours), func.sum(segs.c.utilization_gpu_hours)
    rightsize_pct = bindparam(
        "rightsize_utilization_pct", settings.rightsize_utilization_pct, type_=Numeric()
    )
    per_resource = (
        select(
            segs.c.resource_id,
            observed.label("observed_hours"),
            idle.label("idle_hours"),
            last_observed.label("last_observed_hour"),
            last_active.label("last_active_hour"),
            func.sum(segs.c.cost_micros).label("window_cost_micros"),
            func.sum(segs.c.gpu_hours).label("window_gpu_hours"),
            util_x.label("utilization_x_gpu_hours"),
            util_gpu_hours.label("utilization_gpu_hours"),
            func.max(segs.c.peak_gpu_load).label("peak_gpu_load"),
            func.sum(segs.c.committed_rows).label("committed_rows"),
        )
        .where(*([segs.c.resource_id.not_in(withheld)] if withheld is not None else []))
        .group_by(segs.c.resource_id)
        .having(
            or_(
                and_(
                    observed >= settings.idle_min_observed_hours,
                    idle * 100 * share_d >= observed * share_n,
                    or_(last_active.is_(None), last_active < last_observed),
                ),
                # Rightsizing candidates: several GPUs, mean utilization below the threshold.
                and_(
                    func.max(segs.c.max_gpu_count) > 1,
                    util_gpu_hours > 0,
                    util_x < rightsize_pct * util_gpu_hours,
                ),
            )
        )
        .cte("per_resource")
    )
    in_streak = and_(
        segs.c.resource_id == per_resource.c.resource_id,
        or_(
            per_resource.c.last_active_hour.is_(None),
            segs.c.last_observed_hour >= per_resource.c.last_active_hour,
        ),
    )
    streak = (
        select(
            per_resource.c.resource_id,
            func.sum(segs.c.tail_idle_rows).label("streak_hours"),
            func.min(segs.c.tail_idle_start).label("streak_start"),
            func.sum(segs.c.tail_idle_cost_micros).label("streak_cost_micros"),
        )
        .select_from(per_resource.join(segs, in_streak))
        .group_by(per_resource.c.resource_id)
        .cte("streaks")
    )
    u = gpu_usage_hourly
    last_row = and_(
        u.c.resource_id == per_resource.c.resource_id, u.c.usage_hour == per_resource.c.last_observed_hour
    )
    return (
        select(
            per_resource.c.resource_id,
            u.c.provider,
            u.c.region,
            u.c.gpu_type,
            u.c.gpu_count,
            u.c.model_name,
            u.c.team,
            u.c.pricing_category,
            *(per_resource.c[c] for c in list(per_resource.c.keys())[1:]),
            streak.c.streak_hours,
            streak.c.streak_start,
            streak.c.streak_cost_micros,
        )
        .select_from(
            per_resource.join(u, last_row).outerjoin(
                streak, streak.c.resource_id == per_resource.c.resource_id
            )
        )
        .order_by(per_resource.c.resource_id)
    )


def merge_reports(reports: Sequence[RuleReport], extra_rows: int = 0) -> RuleReport:
    """One report of several scans (``extra_rows``: rows checked before, by the refresh)."""
    violations: dict[str, int] = {}
    fixes: dict[str, str] = {}
    samples: list[Any] = []
    examples: list[str] = []
    for r in reports:
        for rule, n in r.violations.items():
            violations[rule] = violations.get(rule, 0) + n
        fixes.update(r.fixes)
        samples.extend(r.samples)
        examples.extend(r.examples)
    rows = sum(r.rows_checked for r in reports) + extra_rows
    return RuleReport(rows, violations, tuple(samples), tuple(examples), fixes)
