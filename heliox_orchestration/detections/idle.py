"""Idle-GPU recommendations: GPUs that cost money while doing nothing.

The rule (every threshold from ``Settings``), evaluated per ``resource_id`` over the trailing
window of ``IDLE_LOOKBACK_DAYS`` x 24 completed hours before ``as_of``:

* an hour is idle when ``gpu_utilization_pct < IDLE_UTILIZATION_PCT``. A NULL utilization is
  unknown and counts as *not* idle (FOCUS imports leave it NULL): Heliox never recommends
  shutting down a GPU it knows nothing about;
* a resource is a finding when it has at least ``IDLE_MIN_OBSERVED_HOURS`` rows in the window
  and at least ``IDLE_MIN_IDLE_SHARE_PCT`` percent of them are idle, and it is idle now: its
  trailing idle streak is not empty (a GPU whose last hour was busy is not wasting money now,
  and a mean cost over an empty streak would be undefined);
* the streak runs from the first idle hour after the last non-idle hour (or from the first
  observed hour, if there is none) through the last observed hour; each row is one hour, so
  "idle for N days" is streak rows // 24;
* "X% idle" is idle rows / observed rows, rounded down (100% means every hour was idle);
* monthly savings = mean hourly cost over the streak x 730; severity ``high`` for a streak of
  7 days or more, ``medium`` for 3 or more, else ``low``.

Per-resource counts, the last active hour and the streak cost are one aggregate query over the
raw hours (``source="raw"``, the reference); by default the same rule reads the per-resource daily
rollup where it is usable (``detections.idle_rollup``), with identical findings. A finding on
committed capacity (its last hour's ``pricing_category`` is Committed) says "reallocate" and saves
$0 by terminating; rightsizing (``detections.rightsizing``) comes with the rollup evaluation.

A resource with a usage row in the window that fails the data-quality rules
(``costs.quality``) is not judged: it is withheld from the query, reported with the
evaluation, and every other resource is judged as usual.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Numeric,
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    union,
)

from heliox_orchestration.costs.common import (
    HOURS_PER_MONTH,
    NotMaterializedError,
    as_int,
    fetch_frame,
    micros_ratio,
    records_of,
    utc_hour,
)
from heliox_orchestration.costs.quality import (
    Rule,
    RuleReport,
    bad_resources_query,
    blank,
    evaluate_rules,
    usage_rule_report,
    withheld_resources,
)
from heliox_orchestration.costs.rollup import COMMITTED, rollup_rows_query
from heliox_orchestration.db.gpu_prices import PROVIDER_LABELS
from heliox_orchestration.db.rollup_schema import rightsizing_recommendations
from heliox_orchestration.db.schema import (
    gpu_usage_hourly,
    idle_gpu_evaluations,
    idle_gpu_recommendations,
    idle_gpu_withheld_resources,
    money_sum_micros,
)
from heliox_orchestration.detections.idle_rollup import (
    is_idle_finding,
    merge_reports,
    merge_withheld,
    plan_segments,
    raw_ranges,
    read_candidates,
)
from heliox_orchestration.detections.rightsizing import RIGHTSIZE_COLUMNS, rightsizing_frame
from heliox_orchestration.money import MICROS
from heliox_orchestration.reports import IdleFinding, IdleSpendReport, RightsizingFinding, WithheldResource
from heliox_orchestration.settings import Settings

ROLLUP, RAW = "rollup", "raw"  # where compute_idle_evaluation reads the window
TERMINATE, REALLOCATE = "terminate", "reallocate"
REALLOCATE_DETAIL = "; committed capacity: reallocate it (no savings from terminating)"
SEVERITY_DAYS = (("high", 7), ("medium", 3))  # streak days at or above which; else "low"
SEVERITIES = ("high", "medium", "low")
FINDING_COLUMNS = [c.name for c in idle_gpu_recommendations.columns if c.name != "evaluated_at"]


@dataclass(frozen=True)
class IdleWindow:
    """The completed hours [start, end) judged at ``as_of``."""

    as_of: dt.datetime
    start: dt.datetime
    end: dt.datetime


def idle_window(settings: Settings, as_of: dt.datetime | None = None) -> IdleWindow:
    as_of = (as_of or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    # The current hour is still being billed: the window ends at its start.
    end = utc_hour(as_of)
    return IdleWindow(as_of, end - dt.timedelta(days=settings.idle_lookback_days), end)


def idle_candidates_query(
    window: IdleWindow, settings: Settings, withheld: Select[tuple[str]] | None = None
) -> Select:
    """Per resource in the window: observed/idle rows, last active hour, streak rows and cost,
    and the attributes of its last observed row; only resources meeting the finding rule, and
    none of the resource_ids selected by ``withheld``.

    The window's rows are aggregated in one pass (no intermediate table of every window row);
    the streaks of the few resulting candidates are then read through the primary key
    (resource_id, usage_hour), one small range per candidate."""
    u = gpu_usage_hourly
    threshold = bindparam("idle_utilization_pct", settings.idle_utilization_pct, type_=Numeric())
    # CASE sends NULL utilization to ELSE: unknown is never idle.
    is_idle = case((u.c.gpu_utilization_pct < threshold, 1), else_=0)
    # The idle share as an exact fraction n/d, so the test is integer arithmetic on both databases.
    share_n, share_d = settings.idle_min_idle_share_pct.as_integer_ratio()
    observed, idle = func.count(), func.sum(is_idle)
    last_observed = func.max(u.c.usage_hour)
    last_active = func.max(case((is_idle == 0, u.c.usage_hour)))
    per_resource = (
        select(
            u.c.resource_id,
            observed.label("observed_hours"),
            idle.label("idle_hours"),
            last_observed.label("last_observed_hour"),
            last_active.label("last_active_hour"),
        )
        .where(
            u.c.usage_hour >= window.start,
            u.c.usage_hour < window.end,
            *([u.c.resource_id.not_in(withheld)] if withheld is not None else []),
        )
        .group_by(u.c.resource_id)
        .having(
            observed >= settings.idle_min_observed_hours,
            idle * 100 * share_d >= observed * share_n,
            # Idle now: the streak after the last active hour is not empty.
            or_(last_active.is_(None), last_active < last_observed),
        )
        .cte("per_resource")
    )
    s = u.alias("streak_hours")
    in_streak = and_(
        s.c.resource_id == per_resource.c.resource_id,
        s.c.usage_hour >= window.start,
        s.c.usage_hour < window.end,
        or_(per_resource.c.last_active_hour.is_(None), s.c.usage_hour > per_resource.c.last_active_hour),
    )

    def over_streak(aggregate: ColumnElement[Any], name: str) -> Any:
        return select(aggregate).where(in_streak).scalar_subquery().label(name)

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
            per_resource.c.observed_hours,
            per_resource.c.idle_hours,
            per_resource.c.last_active_hour,
            per_resource.c.last_observed_hour,
            over_streak(func.count(), "streak_hours"),
            over_streak(func.min(s.c.usage_hour), "streak_start"),
            over_streak(money_sum_micros(s.c.cost_usd), "streak_cost_micros"),
        )
        .select_from(per_resource.join(u, last_row))
        .order_by(per_resource.c.resource_id)
    )


def severity_for(idle_days: int) -> str:
    return next((name for name, days in SEVERITY_DAYS if idle_days >= days), "low")


def severity_sql(idle_days: ColumnElement[int]) -> ColumnElement[str]:
    """``severity_for`` as a SQL expression (the output check compares stored rows with it)."""
    return case(*((idle_days >= days, name) for name, days in SEVERITY_DAYS), else_="low")


def idle_title(provider: str, gpu_type: str) -> str:
    return f"Idle GPU: {gpu_type} on {PROVIDER_LABELS.get(provider, provider.upper())}"


def idle_detail(idle_pct: int, streak_hours: int) -> str:
    days = streak_hours // 24
    if days >= 1:
        return f"{idle_pct}% idle for {days} day{'s' if days != 1 else ''}"
    return f"{idle_pct}% idle for {streak_hours} hour{'s' if streak_hours != 1 else ''}"


def _findings_frame(raw: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
    """Apply the display and money rules to the query's per-resource rows (a handful of rows)."""
    records = []
    for r in raw if isinstance(raw, list) else records_of(raw):
        observed, idle, streak = (
            as_int(r["observed_hours"]),
            as_int(r["idle_hours"]),
            as_int(r["streak_hours"]),
        )
        streak_micros = as_int(r["streak_cost_micros"])
        idle_pct = idle * 100 // observed
        hourly = micros_ratio(streak_micros, streak)
        # Committed capacity is paid for whether it runs or not: reallocate it, $0 from terminating.
        action = REALLOCATE if r["pricing_category"] == COMMITTED else TERMINATE
        monthly = micros_ratio(streak_micros * HOURS_PER_MONTH, streak) if action == TERMINATE else Decimal(0)
        records.append(
            {
                **{k: r[k] for k in ("resource_id", "provider", "region", "gpu_type", "model_name", "team")},
                "gpu_count": as_int(r["gpu_count"]),
                "severity": severity_for(streak // 24),
                "idle_days": streak // 24,
                "idle_pct": idle_pct,
                "observed_hours": observed,
                "idle_hours": idle,
                "streak_hours": streak,
                "streak_start": r["streak_start"],
                "last_active_hour": r["last_active_hour"],
                "last_observed_hour": r["last_observed_hour"],
                "hourly_cost_usd": hourly,
                "monthly_savings_usd": monthly.quantize(MICROS),
                "title": idle_title(r["provider"], r["gpu_type"]),
                "detail": idle_detail(idle_pct, streak) + (REALLOCATE_DETAIL if action == REALLOCATE else ""),
                "action": action,
            }
        )
    return _by_savings(records)


def _by_savings(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Findings highest savings first (ties by resource, for a stable order)."""

    records = sorted(records, key=lambda r: (-r["monthly_savings_usd"], r["resource_id"]))
    return pd.DataFrame(records, columns=FINDING_COLUMNS, dtype=object)


@dataclass(frozen=True)
class IdleEvaluation:
    """All findings (every severity) of one evaluation, highest savings first."""

    window: IdleWindow
    findings: pd.DataFrame  # FINDING_COLUMNS
    has_usage: bool = True  # False: no usage rows at all in the window
    withheld: tuple[WithheldResource, ...] = ()  # not judged: their usage rows fail checks
    usage_report: RuleReport | None = None  # the rules on the window's rows (None: loaded)
    rightsizing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RIGHTSIZE_COLUMNS))
    rollup_days: tuple[dt.date, ...] = ()  # whole local days read from the rollup
    raw_days: tuple[dt.date, ...] = ()  # (partial) local days read from the raw hours
    unrolled_days: tuple[dt.date, ...] = ()  # whole local days read raw: no usable rollup

    @property
    def as_of(self) -> dt.datetime:
        return self.window.as_of

    def to_findings(self, severities: Collection[str] | None = None) -> tuple[IdleFinding, ...]:
        wanted = set(SEVERITIES if severities is None else severities)
        fields = IdleFinding.__dataclass_fields__
        return tuple(
            IdleFinding(**{k: v for k, v in r.items() if k in fields})
            for r in records_of(self.findings)
            if r["severity"] in wanted
        )

    def to_rightsizing(self) -> tuple[RightsizingFinding, ...]:
        fields = RightsizingFinding.__dataclass_fields__
        return tuple(
            RightsizingFinding(**{k: v for k, v in r.items() if k in fields})
            for r in records_of(self.rightsizing)
        )

    def report(self, severities: Collection[str] = ("high",)) -> IdleSpendReport:
        return IdleSpendReport(self.as_of, self.to_findings(severities), self.withheld)


def compute_idle_evaluation(
    engine: Engine, settings: Settings, as_of: dt.datetime | None = None, *, source: str = ROLLUP
) -> IdleEvaluation:
    """Evaluate the idle rule at ``as_of`` (default: now), with rightsizing. ``source`` ``rollup``
    (the default) reads the daily rollup where it is usable and the raw hours elsewhere
    (``detections.idle_rollup``); ``raw`` is the raw-row rule over ``gpu_usage_hourly`` alone
    (no rightsizing), kept as the reference the rollup must match. The data-quality rules run
    first on the hours read raw; resources with a failing row are withheld, not judged."""
    window = idle_window(settings, as_of)
    if source == RAW:
        return _raw_evaluation(engine, settings, window)
    if source != ROLLUP:
        raise ValueError(f"source must be {ROLLUP!r} or {RAW!r}, not {source!r}")
    with engine.connect() as conn:
        rollup_days, raw_segments = plan_segments(conn, window.start, window.end, settings)
        limit = settings.max_hourly_cost_usd
        ranges = raw_ranges(raw_segments)
        reports = [usage_rule_report(engine, a, b, max_hourly_cost=limit) for a, b in ranges]
        withheld: tuple[WithheldResource, ...] = ()
        leave_out = None
        if not all(r.passed for r in reports):
            found = [w for a, b in ranges for w in withheld_resources(engine, a, b, max_hourly_cost=limit)]
            withheld = merge_withheld(found)
            leave_out = union(
                *(bad_resources_query(a, b, engine.dialect.name, max_hourly_cost=limit) for a, b in ranges)
            )
        rows = read_candidates(conn, rollup_days, raw_segments, settings, leave_out)
        rolled_rows = as_int(conn.execute(rollup_rows_query(rollup_days)).scalar_one()) if rollup_days else 0
        u = gpu_usage_hourly.c
        any_row = (
            select(u.resource_id).where(u.usage_hour >= window.start, u.usage_hour < window.end).limit(1)
        )
        has_usage = bool(rows) or conn.execute(any_row).first() is not None
    idle_rows = [r for r in rows if is_idle_finding(r, settings)]
    idle_ids = {r["resource_id"] for r in idle_rows}
    rightsizing = rightsizing_frame((r for r in rows if r["resource_id"] not in idle_ids), settings)
    return IdleEvaluation(
        window,
        _findings_frame(idle_rows),
        has_usage,
        withheld,
        merge_reports(reports, rolled_rows),
        rightsizing=rightsizing,
        rollup_days=tuple(rollup_days),
        raw_days=tuple(s.day for s in raw_segments),
        unrolled_days=tuple(s.day for s in raw_segments if s.whole),
    )


def _raw_evaluation(engine: Engine, settings: Settings, window: IdleWindow) -> IdleEvaluation:
    limit = settings.max_hourly_cost_usd
    checked = usage_rule_report(engine, window.start, window.end, max_hourly_cost=limit)
    withheld: tuple[WithheldResource, ...] = ()
    leave_out = None
    if not checked.passed:
        withheld = withheld_resources(engine, window.start, window.end, max_hourly_cost=limit)
        leave_out = bad_resources_query(window.start, window.end, engine.dialect.name, max_hourly_cost=limit)
    u = gpu_usage_hourly.c
    with engine.connect() as conn:
        raw = fetch_frame(conn, idle_candidates_query(window, settings, leave_out))
        any_row = (
            select(u.resource_id).where(u.usage_hour >= window.start, u.usage_hour < window.end).limit(1)
        )
        has_usage = not raw.empty or conn.execute(any_row).first() is not None
    return IdleEvaluation(window, _findings_frame(raw), has_usage, withheld, checked)


def idle_spend_report(
    engine: Engine,
    settings: Settings,
    as_of: dt.datetime | None = None,
    severities: Sequence[str] = ("high",),
) -> IdleSpendReport:
    """Idle findings of the given severities computed from ``gpu_usage_hourly`` at ``as_of``
    (default: now), highest savings first. Needs no prior materialization (``heliox preview``);
    ``load_idle_spend_report`` reads the ``idle_gpu_recommendations`` asset instead."""
    return compute_idle_evaluation(engine, settings, as_of).report(severities)


def write_idle_evaluation(engine: Engine, evaluation: IdleEvaluation) -> int:
    """Record one evaluation and its findings in one transaction (re-running the same
    ``as_of`` replaces it); returns the number of findings."""
    as_of = evaluation.as_of
    findings = [{**r, "evaluated_at": as_of} for r in records_of(evaluation.findings)]
    savings = sum((r["monthly_savings_usd"] for r in findings), Decimal(0))
    withheld = [
        {
            "evaluated_at": as_of,
            "resource_id": w.resource_id,
            "usage_rows": w.usage_rows,
            "problems": "; ".join(w.problems),
        }
        for w in evaluation.withheld
    ]
    rightsized = [{**r, "evaluated_at": as_of} for r in records_of(evaluation.rightsizing)]
    tables = (idle_gpu_recommendations, idle_gpu_withheld_resources, rightsizing_recommendations)
    with engine.begin() as conn:
        for table in (*tables, idle_gpu_evaluations):
            conn.execute(delete(table).where(table.c.evaluated_at == as_of))
        conn.execute(
            idle_gpu_evaluations.insert().values(
                evaluated_at=as_of,
                window_start=evaluation.window.start,
                window_end=evaluation.window.end,
                findings=len(findings),
                high_severity_findings=sum(1 for r in findings if r["severity"] == "high"),
                monthly_savings_usd=savings,
            )
        )
        if findings:
            conn.execute(idle_gpu_recommendations.insert(), findings)
        if withheld:
            conn.execute(idle_gpu_withheld_resources.insert(), withheld)
        if rightsized:
            conn.execute(rightsizing_recommendations.insert(), rightsized)
    return len(findings)


def latest_evaluation(conn: Connection) -> Row[Any] | None:
    """The row of the latest recorded evaluation, or None."""
    e = idle_gpu_evaluations
    return conn.execute(select(e).order_by(e.c.evaluated_at.desc()).limit(1)).first()


def load_idle_evaluation(engine: Engine) -> IdleEvaluation:
    """The latest recorded evaluation: its findings are the open recommendations."""
    r = idle_gpu_recommendations
    with engine.connect() as conn:
        latest = latest_evaluation(conn)
        if latest is None:
            raise NotMaterializedError(
                "idle_gpu_recommendations has never been materialized; materialize it first."
            )
        raw = fetch_frame(
            conn,
            select(*(r.c[name] for name in FINDING_COLUMNS)).where(r.c.evaluated_at == latest.evaluated_at),
        )
        w = idle_gpu_withheld_resources
        withheld = tuple(
            WithheldResource(row.resource_id, row.usage_rows, tuple(row.problems.split("; ")))
            for row in conn.execute(
                select(w).where(w.c.evaluated_at == latest.evaluated_at).order_by(w.c.resource_id)
            )
        )
        rs = rightsizing_recommendations
        rightsizing = fetch_frame(
            conn,
            select(*(rs.c[name] for name in RIGHTSIZE_COLUMNS))
            .where(rs.c.evaluated_at == latest.evaluated_at)
            .order_by(rs.c.monthly_savings_usd.desc(), rs.c.resource_id),
        )
    window = IdleWindow(latest.evaluated_at, latest.window_start, latest.window_end)
    return IdleEvaluation(window, _by_savings(records_of(raw)), withheld=withheld, rightsizing=rightsizing)


def load_idle_spend_report(engine: Engine, severities: Sequence[str] = ("high",)) -> IdleSpendReport:
    """The open recommendations of the given severities, as materialized by the
    ``idle_gpu_recommendations`` asset; raises ``NotMaterializedError`` if it never ran."""
    return load_idle_evaluation(engine).report(severities)


# --- the rules on stored findings (the output check, and the summary that counts them) ------


def idle_finding_rules() -> list[Rule]:
    c = idle_gpu_recommendations.c
    return [
        Rule("negative monthly_savings_usd", c.monthly_savings_usd < 0),
        Rule("idle_pct outside 0-100", or_(c.idle_pct < 0, c.idle_pct > 100)),
        Rule("severity does not match idle_days", c.severity != severity_sql(c.idle_days)),
        Rule("streak longer than the observed hours", c.streak_hours > c.observed_hours),
        Rule(
            "NULL or blank key (resource_id, provider, gpu_type)",
            blank(c.resource_id, c.provider, c.gpu_type),
        ),
    ]


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
