"""The spend-anomaly evaluation of a local day: computed from ``gpu_usage_hourly`` (the rule in
``detections/anomaly.py``), stored by the ``spend_anomalies`` asset and read back by the alert."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import Engine, delete, select

from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.costs.spend_series import latest_hour_end, load_spend_series
from heliox_orchestration.db.schema import spend_anomalies, spend_anomaly_drivers, spend_anomaly_evaluations
from heliox_orchestration.detections.anomaly import (
    Anomaly,
    Baseline,
    ResourceDriver,
    baseline_days,
    find_anomalies,
    top_resources,
)
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings


@dataclass(frozen=True)
class AnomalyEvaluation:
    day: dt.date
    timezone: str
    baseline_kind: str | None
    baseline_note: str  # which baseline applied, or why there is none
    partial_until: dt.datetime | None  # today: the end of the hours compared; None: whole day
    anomalies: tuple[Anomaly, ...]


def evaluate_spend_anomalies(
    engine: Engine, day: dt.date, settings: Settings, now: dt.datetime
) -> AnomalyEvaluation:
    """The anomalies of ``day``: the whole day once it has ended, else its hours so far (up to
    the end of its latest usage hour) against the same local hours of the baseline days."""
    tz = settings.timezone
    partial_until = None
    if now < local_day_bounds(day, tz)[1]:
        partial_until = latest_hour_end(engine, day, tz, now)
        if partial_until is None:
            return AnomalyEvaluation(day, tz, None, f"{day} has no usage data yet", None, ())
    data = load_spend_series(engine, day, tz, partial_until)
    baseline: Baseline = baseline_days(day, data.days_with_data - {day})
    found = find_anomalies(
        day, data.series, baseline, settings.anomaly_pct, settings.anomaly_min_usd, partial_until
    )
    anomalies = tuple(
        replace(a, drivers=top_resources(day, data.resources_of(a.dimension, a.value), baseline.days))
        for a in found
    )
    return AnomalyEvaluation(day, tz, baseline.kind, baseline.text, partial_until, anomalies)


def write_anomaly_evaluation(engine: Engine, evaluation: AnomalyEvaluation, computed_at: dt.datetime) -> None:
    """Replace the stored evaluation of its day in one transaction."""
    day = evaluation.day
    anomalies = [
        {
            "day": day,
            "dimension": a.dimension,
            "value": a.value,
            "current_usd": a.current_usd,
            "baseline_usd": a.baseline_usd,
            "baseline_kind": a.baseline_kind,
            "baseline_days": ",".join(d.isoformat() for d in a.baseline_days),
            "partial_until": a.partial_until,
        }
        for a in evaluation.anomalies
    ]
    drivers = [
        {
            "day": day,
            "dimension": a.dimension,
            "value": a.value,
            "position": i,
            "resource_id": d.resource_id,
            "current_usd": d.current_usd,
            "baseline_usd": d.baseline_usd,
        }
        for a in evaluation.anomalies
        for i, d in enumerate(a.drivers, start=1)
    ]
    with engine.begin() as conn:
        for table in (spend_anomaly_drivers, spend_anomalies, spend_anomaly_evaluations):
            conn.execute(delete(table).where(table.c.day == day))
        conn.execute(
            spend_anomaly_evaluations.insert().values(
                day=day,
                timezone=evaluation.timezone,
                baseline_kind=evaluation.baseline_kind,
                baseline_note=evaluation.baseline_note[:255],
                partial_until=evaluation.partial_until,
                anomalies=len(anomalies),
                computed_at=computed_at,
            )
        )
        if anomalies:
            conn.execute(spend_anomalies.insert(), anomalies)
        if drivers:
            conn.execute(spend_anomaly_drivers.insert(), drivers)


def load_anomaly_evaluation(engine: Engine, day: dt.date, timezone: str) -> AnomalyEvaluation:
    """The stored evaluation of ``day``; raises ``NotMaterializedError`` when there is none
    (or it was computed in another ``TIMEZONE``)."""
    with engine.connect() as conn:
        head = conn.execute(
            select(spend_anomaly_evaluations).where(spend_anomaly_evaluations.c.day == day)
        ).first()
        if head is None or head.timezone != timezone:
            raise NotMaterializedError(
                f"spend_anomalies has no materialization for {day} in TIMEZONE={timezone}; "
                "materialize that partition first."
            )
        rows = conn.execute(select(spend_anomalies).where(spend_anomalies.c.day == day)).all()
        t = spend_anomaly_drivers
        driver_rows = conn.execute(select(t).where(t.c.day == day).order_by(t.c.position)).all()
    drivers: dict[tuple[str, str], list[ResourceDriver]] = {}
    for d in driver_rows:
        drivers.setdefault((d.dimension, d.value), []).append(
            ResourceDriver(d.resource_id, d.current_usd, d.baseline_usd)
        )
    anomalies = [
        Anomaly(
            day,
            r.dimension,
            r.value,
            r.current_usd,
            r.baseline_usd,
            r.baseline_kind,
            tuple(dt.date.fromisoformat(x) for x in r.baseline_days.split(",") if x),
            r.partial_until,
            tuple(drivers.get((r.dimension, r.value), ())),
        )
        for r in rows
    ]
    order = {"total": 0, "model": 1, "team": 2}
    anomalies.sort(key=lambda a: (order.get(a.dimension, 3), -a.excess_usd, a.value))
    return AnomalyEvaluation(
        day, timezone, head.baseline_kind, head.baseline_note, head.partial_until, tuple(anomalies)
    )
