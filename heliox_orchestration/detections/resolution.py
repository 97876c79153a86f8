"""Idle GPUs that were alerted on, until they stop costing money idle, and the savings realized.

* An *episode* opens when the idle alert about a GPU is delivered (to any destination), with the
  finding's hourly cost (the mean over its idle streak) and monthly cost (x 730).
* Each idle evaluation (the ``idle_gpu_recommendations`` asset) then looks at every open episode,
  from the evaluation's results and the GPU's usage rows before the evaluation's window end:
  - withheld by the evaluation (its rows fail the data rules): unknown, left open;
  - **resolved, gone** when it has had no usage row for ``IDLE_RESOLVE_GONE_HOURS`` hours while
    the fleet's newest usage row is that much newer (so a stalled import never looks like every
    GPU was shut down): resolved from the hour after its last row. The idle rule still counts
    the rows it left in its window, so this comes before the evaluation's verdict;
  - still a finding of the evaluation (any severity): still idle, its costs updated;
  - otherwise **resolved, busy again** when its latest ``IDLE_RESOLVE_BUSY_HOURS`` usage rows or
    more all have a utilization at or above ``IDLE_UTILIZATION_PCT`` (a row of unknown
    utilization is not busy): resolved from the first of those hours.
  A resolution never dates from before the hour of the episode's first alert.
* A resolved GPU is *reopened* by a later evaluation that finds it idle again with a usage row
  after its resolution that is not busy, from that row's hour; until then it is not alerted as
  idle again, and a later idle alert opens a new episode.

Savings realized in a local month (``TIMEZONE``) through a report date: over every resolved
episode, its hourly cost x the number of usage hours (UTC hours, each counted in the local day it
starts in, as costs are) from its resolution, or the month's start if later, until the end of the
report date or its reopening, whichever is first. Integer hours times micro-dollar costs: exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Numeric, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.costs.common import records_of, utc_hour
from heliox_orchestration.db.alert_schema import idle_gpu_episodes
from heliox_orchestration.db.schema import gpu_usage_hourly, idle_gpu_evaluations
from heliox_orchestration.db.usage_store import newest_usage_hour_before
from heliox_orchestration.detections.idle import IdleEvaluation
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.reports import IdleFinding
from heliox_orchestration.settings import Settings

HOUR = dt.timedelta(hours=1)
BUSY, GONE = "busy", "gone"


@dataclass(frozen=True)
class Episode:
    episode_id: int
    resource_id: str
    provider: str
    gpu_type: str
    team: str | None
    model_name: str | None
    title: str
    alerted_at: dt.datetime
    hourly_cost_usd: Decimal
    monthly_savings_usd: Decimal
    resolved_at: dt.datetime | None = None
    resolution: str | None = None
    resolution_detail: str | None = None
    resolution_found_at: dt.datetime | None = None
    reopened_at: dt.datetime | None = None


def _episodes(conn: Connection, *where: Any) -> list[Episode]:
    e = idle_gpu_episodes
    rows = conn.execute(select(e).where(*where).order_by(e.c.episode_id))
    return [Episode(**dict(row._mapping)) for row in rows]


def open_episodes(engine: Engine, findings: Iterable[IdleFinding], now: dt.datetime) -> int:
    """Open an episode for each alerted finding whose GPU has none open; returns how many."""
    opened = 0
    for f in findings:
        if f.hourly_cost_usd is None:
            continue
        row = {
            "resource_id": f.resource_id,
            "provider": f.provider,
            "gpu_type": f.gpu_type,
            "team": f.team,
            "model_name": f.model_name,
            "title": f.title[:255],
            "alerted_at": now,
            "hourly_cost_usd": f.hourly_cost_usd,
            "monthly_savings_usd": f.monthly_savings_usd,
        }
        try:
            with engine.begin() as conn:
                if _episodes(conn, idle_gpu_episodes.c.resource_id == f.resource_id, _is_open()):
                    continue
                conn.execute(insert(idle_gpu_episodes).values(**row))
                opened += 1
        except IntegrityError:
            pass  # another run opened it: one open episode per GPU (ux_idle_gpu_episodes_open)
    return opened


def _is_open() -> Any:
    return idle_gpu_episodes.c.resolved_at.is_(None)


def latest_episodes(engine: Engine, resource_ids: Iterable[str]) -> dict[str, Episode]:
    """The latest episode of each of these GPUs that has one."""
    ids = list(resource_ids)
    if not ids:
        return {}
    e = idle_gpu_episodes.c
    with engine.connect() as conn:
        episodes = _episodes(conn, e.resource_id.in_(ids))
    return {ep.resource_id: ep for ep in episodes}  # ordered by id: the last one wins


@dataclass(frozen=True)
class UsageFacts:
    last_hour: dt.datetime | None  # its newest usage row before the window end
    busy_hours: int  # rows after its last row that is not busy
    first_busy_hour: dt.datetime | None


def _usage_facts(
    conn: Connection, resource_id: str, start: dt.datetime, end: dt.datetime, threshold: Decimal
) -> UsageFacts:
    u = gpu_usage_hourly.c
    mine = and_(u.resource_id == resource_id, u.usage_hour < end)
    last = conn.execute(select(func.max(u.usage_hour)).where(mine)).scalar_one()
    pct = bindparam("threshold", threshold, type_=Numeric())
    not_busy = or_(u.gpu_utilization_pct.is_(None), u.gpu_utilization_pct < pct)
    last_not_busy = conn.execute(
        select(func.max(case((not_busy, u.usage_hour)))).where(mine, u.usage_hour >= start)
    ).scalar_one()
    after = [u.usage_hour > last_not_busy] if last_not_busy is not None else []
    count, first = conn.execute(
        select(func.count(), func.min(u.usage_hour)).where(mine, u.usage_hour >= start, *after)
    ).one()
    return UsageFacts(last, int(count or 0), first)


def resolution_of(
    episode: Episode,
    facts: UsageFacts,
    fleet_newest: dt.datetime | None,
    settings: Settings,
    *,
    still_idle: bool = False,
) -> tuple[dt.datetime, str, str] | None:
    """(resolved_at, busy|gone, what changed) of an open episode, or None while neither rule
    holds (see the module's rules); ``still_idle``: the evaluation still finds it idle."""
    floor = utc_hour(episode.alerted_at)
    gone_after = dt.timedelta(hours=settings.idle_resolve_gone_hours)
    if fleet_newest is not None and (facts.last_hour is None or fleet_newest - facts.last_hour >= gone_after):
        since = facts.last_hour + HOUR if facts.last_hour is not None else floor
        hours = int((fleet_newest + HOUR - since) / HOUR)
        return max(since, floor), GONE, f"no usage data for {hours} hours"
    if still_idle:
        return None
    if facts.busy_hours >= settings.idle_resolve_busy_hours and facts.first_busy_hour is not None:
        detail = f"utilization at or above {settings.idle_utilization_pct}% for {facts.busy_hours} hours"
        return max(facts.first_busy_hour, floor), BUSY, detail
    return None


def _first_idle_hour(
    conn: Connection, resource_id: str, since: dt.datetime, end: dt.datetime, threshold: Decimal
) -> Any:
    u = gpu_usage_hourly.c
    pct = bindparam("threshold", threshold, type_=Numeric())
    return conn.execute(
        select(func.min(u.usage_hour)).where(
            u.resource_id == resource_id,
            u.usage_hour >= since,
            u.usage_hour < end,
            or_(u.gpu_utilization_pct.is_(None), u.gpu_utilization_pct < pct),
        )
    ).scalar_one()


@dataclass(frozen=True)
class EpisodeChanges:
    still_idle: int = 0
    resolved: tuple[Episode, ...] = ()
    reopened: int = 0


def track_episodes(engine: Engine, evaluation: IdleEvaluation, settings: Settings) -> EpisodeChanges:
    """Apply one idle evaluation to the episodes (see the module's rules). An evaluation older
    than the latest recorded one (a past ``as_of`` reproduced) changes nothing."""
    findings = {r["resource_id"]: r for r in records_of(evaluation.findings)}
    withheld = {w.resource_id for w in evaluation.withheld}
    window, threshold = evaluation.window, settings.idle_utilization_pct
    e = idle_gpu_episodes.c
    resolved: list[Episode] = []
    still_idle = reopened = 0
    with engine.begin() as conn:
        latest = conn.execute(select(func.max(idle_gpu_evaluations.c.evaluated_at))).scalar_one()
        if latest is not None and latest > evaluation.as_of:
            return EpisodeChanges()
        fleet_newest = newest_usage_hour_before(conn, window.end)
        for ep in _episodes(conn, _is_open()):
            if ep.resource_id in withheld:
                continue
            facts = _usage_facts(conn, ep.resource_id, window.start, window.end, threshold)
            finding = findings.get(ep.resource_id)
            outcome = resolution_of(ep, facts, fleet_newest, settings, still_idle=finding is not None)
            if outcome is None:
                if finding is not None:
                    still_idle += 1
                    conn.execute(
                        update(idle_gpu_episodes)
                        .where(e.episode_id == ep.episode_id)
                        .values(
                            hourly_cost_usd=finding["hourly_cost_usd"],
                            monthly_savings_usd=finding["monthly_savings_usd"],
                        )
                    )
                continue
            resolved_at, resolution, detail = outcome
            values = {
                "resolved_at": resolved_at,
                "resolution": resolution,
                "resolution_detail": detail,
                "resolution_found_at": evaluation.as_of,
            }
            conn.execute(update(idle_gpu_episodes).where(e.episode_id == ep.episode_id).values(**values))
            resolved.append(Episode(**{**ep.__dict__, **values}))
        for ep in _episodes(conn, e.resolved_at.is_not(None), e.reopened_at.is_(None)):
            if ep.resource_id not in findings or ep.resolution_found_at is None:
                continue
            if evaluation.as_of <= ep.resolution_found_at or ep.resolved_at is None:
                continue
            again = _first_idle_hour(conn, ep.resource_id, ep.resolved_at, window.end, threshold)
            if again is None:
                continue  # gone, and not back: the evaluation only counts the rows it left
            conn.execute(
                update(idle_gpu_episodes).where(e.episode_id == ep.episode_id).values(reopened_at=again)
            )
            reopened += 1
    return EpisodeChanges(still_idle, tuple(resolved), reopened)


def resolved_since(engine: Engine, since: dt.datetime) -> list[Episode]:
    """Episodes whose resolution was found at or after ``since``."""
    e = idle_gpu_episodes.c
    with engine.connect() as conn:
        return _episodes(conn, e.resolution_found_at >= since)


def _hour_starts(start: dt.datetime, end: dt.datetime) -> int:
    """How many UTC hours begin in [start, end)."""

    def ceil(instant: dt.datetime) -> dt.datetime:
        floor = utc_hour(instant)
        return floor if floor == instant else floor + HOUR

    return max(0, int((ceil(end) - ceil(start)) / HOUR))


@dataclass(frozen=True)
class RealizedSavings:
    month_start: dt.date
    through: dt.date
    amount_usd: Decimal
    gpus: int  # resolved GPUs counted (each with at least one hour)


def realized_savings(engine: Engine, report_date: dt.date, timezone: str) -> RealizedSavings:
    """Savings realized in ``report_date``'s local month through the end of ``report_date``."""
    first = report_date.replace(day=1)
    start = local_day_bounds(first, timezone)[0]
    end = local_day_bounds(report_date, timezone)[1]
    e = idle_gpu_episodes.c
    with engine.connect() as conn:
        episodes = _episodes(conn, e.resolved_at < end, or_(e.reopened_at.is_(None), e.reopened_at > start))
    total, gpus = Decimal(0), 0
    for ep in episodes:
        assert ep.resolved_at is not None
        stop = min(end, ep.reopened_at) if ep.reopened_at is not None else end
        hours = _hour_starts(max(ep.resolved_at, start), stop)
        if hours:
            total += ep.hourly_cost_usd * hours
            gpus += 1
    return RealizedSavings(first, report_date, total, gpus)
