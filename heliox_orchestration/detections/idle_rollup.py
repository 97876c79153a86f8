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
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Float,
    Select,
    Subquery,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
    union_all,
)

from heliox_orchestration.costs.common import as_int
from heliox_orchestration.costs.quality import RuleReport
from heliox_orchestration.costs.rollup import (
    SEGMENT_COLUMNS,
    Segment,
    segment_rows_query,
    stored_rows_query,
    usable_rollup_days,
)
from heliox_orchestration.db.rollup_schema import daily_resource_usage
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.reports import WithheldResource
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
            is_whole = (a, b) == (day_start, day_end)
            (whole if is_whole else partial).append(Segment(day, a, b, is_whole))
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


def merged(segments: Sequence[Segment]) -> list[Segment]:
    """Contiguous segments joined into one (keyed by its first day)."""
    out: list[Segment] = []
    for s in sorted(segments, key=lambda s: s.start):
        if out and out[-1].end == s.start:
            out[-1] = Segment(out[-1].day, out[-1].start, s.end, whole=False)
        else:
            out.append(s)
    return out


def raw_ranges(segments: Sequence[Segment]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Contiguous UTC ranges of the raw segments (one rule scan each)."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for s in sorted(segments, key=lambda s: s.start):
        if ranges and ranges[-1][1] == s.start:
            ranges[-1] = (ranges[-1][0], s.end)
        else:
            ranges.append((s.start, s.end))
    return ranges


def _segments(
    rollup_days: Sequence[dt.date],
    raw_segments: Sequence[Segment],
    settings: Settings,
    resource_ids: Sequence[str] | None = None,
    *,
    tails: bool = False,
    stored_where: Any = None,
    columns: Sequence[str] | None = None,
) -> Subquery:
    """Every segment row of the window (of ``resource_ids`` only, when given), with the idle
    tails of raw segments only when ``tails``. Contiguous raw days are one segment: the streak
    rule holds for any cut of the window, and fewer groups keep the raw part as cheap as the
    raw-row rule."""
    parts: list[Select] = []
    if rollup_days:
        stored = stored_rows_query(rollup_days, tails=tails, columns=columns)
        if resource_ids is not None:
            stored = stored.where(daily_resource_usage.c.resource_id.in_(resource_ids))
        if stored_where is not None:
            stored = stored.where(stored_where)
        parts.append(stored)
    if raw_segments:
        pct = settings.idle_utilization_pct
        raw = segment_rows_query(merged(raw_segments), pct, resource_ids, tails=tails, columns=columns)
        parts.append(raw)
    if not parts:
        raise ValueError("an idle window has at least one hour")
    return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("segments")


# Above this many resources that may be findings, the first pass reads every resource's rows
# (one scan) instead of naming them.
MAX_NAMED_RESOURCES = 5000
MAX_RAW_HOURS_TO_NAME = 50  # the window's two partial days, at most 25 hours each
# What naming needs; the raw hours' other first-pass aggregates would cost as much again.
MAY_BE_COLUMNS = ["last_observed_hour", "last_active_hour", "max_gpu_count"]


def may_be_findings_query(
    rollup_days: Sequence[dt.date], raw_segments: Sequence[Segment], settings: Settings
) -> Select:
    """The resources with a segment that ends idle (the last one does, when a resource is idle
    now) or with several GPUs: the only ones the idle rule or rightsizing can find. Read through
    the partial index ``ix_daily_resource_usage_ends_idle``: a small share of a working fleet."""
    r = daily_resource_usage.c
    stored_ends_idle = or_(
        r.last_active_hour.is_(None), r.last_active_hour < r.last_observed_hour, r.max_gpu_count > 1
    )
    segs = _segments(
        rollup_days, raw_segments, settings, stored_where=stored_ends_idle, columns=MAY_BE_COLUMNS
    )
    ends_idle = or_(
        segs.c.last_active_hour.is_(None),
        segs.c.last_active_hour < segs.c.last_observed_hour,
        segs.c.max_gpu_count > 1,
    )
    return select(segs.c.resource_id).where(ends_idle).distinct()


def rollup_candidates_query(
    rollup_days: Sequence[dt.date],
    raw_segments: Sequence[Segment],
    settings: Settings,
    withheld: Select[tuple[str]] | CompoundSelect[tuple[str]] | None = None,
    resource_ids: Sequence[str] | None = None,
) -> Select:
    """The first pass, over every resource of the window (or ``resource_ids``): observed and idle hours, last
    observed and active hours, utilization sums; only resources that meet the idle rule or are
    rightsizing candidates (several GPUs, mean utilization below ``RIGHTSIZE_UTILIZATION_PCT``)."""
    segs = _segments(rollup_days, raw_segments, settings, resource_ids)
    share_n, share_d = settings.idle_min_idle_share_pct.as_integer_ratio()
    observed, idle = func.sum(segs.c.usage_rows), func.sum(segs.c.idle_rows)
    last_observed, last_active = func.max(segs.c.last_observed_hour), func.max(segs.c.last_active_hour)
    util_x, util_gpu_hours = func.sum(segs.c.utilization_x_gpu_hours), func.sum(segs.c.utilization_gpu_hours)
    threshold = float(settings.rightsize_utilization_pct)
    rightsize_pct = bindparam("rightsize_utilization_pct", threshold, type_=Float())
    return (
        select(
            segs.c.resource_id,
            observed.label("observed_hours"),
            idle.label("idle_hours"),
            last_observed.label("last_observed_hour"),
            last_active.label("last_active_hour"),
            util_x.label("utilization_x_gpu_hours"),
            util_gpu_hours.label("utilization_gpu_hours"),
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
                and_(
                    func.max(segs.c.max_gpu_count) > 1,
                    util_gpu_hours > 0,
                    util_x < rightsize_pct * util_gpu_hours,
                ),
            )
        )
        .order_by(segs.c.resource_id)
    )


def candidate_segments_query(
    rollup_days: Sequence[dt.date],
    raw_segments: Sequence[Segment],
    settings: Settings,
    resource_ids: Sequence[str],
) -> Select:
    """The second pass: the segment rows of the (few) candidates, through (resource_id, day)
    on the rollup and the primary key of the raw hours."""
    segs = _segments(rollup_days, raw_segments, settings, resource_ids, tails=True)
    return select(*(segs.c[c] for c in SEGMENT_COLUMNS))


def last_rows_query(last_hours: Mapping[str, dt.datetime]) -> Select:
    """The attributes of each candidate's last observed hour, by primary key."""
    u = gpu_usage_hourly.c
    keys = [(resource_id, hour) for resource_id, hour in last_hours.items()]
    return select(
        u.resource_id, u.provider, u.region, u.gpu_type, u.gpu_count, u.model_name, u.team, u.pricing_category
    ).where(tuple_(u.resource_id, u.usage_hour).in_(keys))


def combine(
    first: Sequence[Mapping[str, Any]], segments: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each candidate's streak and window totals from its segment rows: the streak is the idle
    tail of the segment holding its last active hour plus every later segment (see above)."""
    by_resource: dict[str, list[Mapping[str, Any]]] = {}
    for seg in segments:
        by_resource.setdefault(seg["resource_id"], []).append(seg)
    out = []
    for r in first:
        segs = by_resource.get(r["resource_id"], [])
        last_active = r["last_active_hour"]
        streak = [s for s in segs if last_active is None or s["last_observed_hour"] >= last_active]
        starts = [s["tail_idle_start"] for s in streak if s["tail_idle_start"] is not None]
        peaks = [s["peak_gpu_load"] for s in segs if s["peak_gpu_load"] is not None]
        out.append(
            {
                **r,
                "streak_hours": sum(as_int(s["tail_idle_rows"]) for s in streak),
                "streak_start": min(starts, default=None),
                "streak_cost_micros": sum(as_int(s["tail_idle_cost_micros"]) for s in streak),
                "window_cost_micros": sum(as_int(s["cost_micros"]) for s in segs),
                "window_gpu_hours": sum(as_int(s["gpu_hours"]) for s in segs),
                "peak_gpu_load": max(peaks, default=None),
                "committed_rows": sum(as_int(s["committed_rows"]) for s in segs),
            }
        )
    return out


def read_candidates(
    conn: Connection,
    rollup_days: Sequence[dt.date],
    raw_segments: Sequence[Segment],
    settings: Settings,
    withheld: Select[tuple[str]] | CompoundSelect[tuple[str]] | None = None,
) -> list[dict[str, Any]]:
    """The idle findings' and rightsizing candidates' rows of the window (the first pass's
    counts, the streak and totals, the last hour's attributes), in four small queries: the
    resources that may be findings, the first pass over them, their segments, their last hours."""
    named: list[str] | None = None
    raw_hours = sum((s.end - s.start) / dt.timedelta(hours=1) for s in raw_segments)
    # Worth a query only when most of the window is rolled up; else one scan of the raw hours.
    if raw_hours <= MAX_RAW_HOURS_TO_NAME:
        named = list(conn.execute(may_be_findings_query(rollup_days, raw_segments, settings)).scalars())
        if not named:
            return []
        if len(named) > MAX_NAMED_RESOURCES:
            named = None
    first = conn.execute(rollup_candidates_query(rollup_days, raw_segments, settings, withheld, named))
    candidates = [dict(r._mapping) for r in first]
    if not candidates:
        return []
    ids = [r["resource_id"] for r in candidates]
    segments = conn.execute(candidate_segments_query(rollup_days, raw_segments, settings, ids))
    last = {r["resource_id"]: r["last_observed_hour"] for r in candidates}
    attributes = {r.resource_id: r._mapping for r in conn.execute(last_rows_query(last))}
    combined = combine(candidates, [dict(s._mapping) for s in segments])
    # A resource whose hours were deleted since its days were rolled up is not judged.
    return [{**attributes[r["resource_id"]], **r} for r in combined if r["resource_id"] in attributes]


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


def is_idle_finding(r: dict[str, Any], settings: Settings) -> bool:
    """The raw query's HAVING, on a row that may be a rightsizing candidate only."""
    observed, idle = as_int(r["observed_hours"]), as_int(r["idle_hours"])
    share_n, share_d = settings.idle_min_idle_share_pct.as_integer_ratio()
    return (
        observed >= settings.idle_min_observed_hours
        and idle * 100 * share_d >= observed * share_n
        and (r["last_active_hour"] is None or r["last_active_hour"] < r["last_observed_hour"])
    )


def merge_withheld(found: list[WithheldResource]) -> tuple[WithheldResource, ...]:
    merged: dict[str, WithheldResource] = {}
    for w in found:
        old = merged.get(w.resource_id)
        if old is None:
            merged[w.resource_id] = w
        else:
            problems = tuple(dict.fromkeys(old.problems + w.problems))
            merged[w.resource_id] = WithheldResource(w.resource_id, old.usage_rows + w.usage_rows, problems)
    return tuple(merged[k] for k in sorted(merged))
