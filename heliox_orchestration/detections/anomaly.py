"""The spend-anomaly rule, on numbers alone (the SQL that feeds it is ``costs/spend_series.py``).

A local day's spend (or today's spend so far) of the whole fleet, of each model and of each
team is compared with its baseline: the median of the same weekday over the previous 4 weeks
when all 4 of those days have usage data, else the median of the previous 14 days that have
data (at least ``MIN_RECENT_DAYS`` of them). A day without any usage row in the fleet is a gap,
not a $0 day, and is never part of a baseline; a series without spend on a baseline day that
has data is $0 that day. The day is an anomaly when it is above its baseline by at least
``ANOMALY_PCT`` percent of the baseline AND at least ``ANOMALY_MIN_USD`` dollars: both must hold,
so a small series does not page for a large percentage, nor a large one for a small one.

The top resources driving an anomaly are those of its dimension's value whose own spend rose
most over their own median on the same baseline days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from heliox_orchestration.money import micros_to_dollars

WEEKS = 4
RECENT_DAYS = 14
MIN_RECENT_DAYS = 7
TOP_RESOURCES = 3

TOTAL, MODEL, TEAM = "total", "model", "team"
DIMENSIONS = (TOTAL, MODEL, TEAM)
FLEET = "all"  # the value of the total dimension

WEEKDAY, RECENT = "weekday", "recent"
BASELINE_TEXT = {
    WEEKDAY: "median of the same weekday over the previous 4 weeks",
    RECENT: "median of the previous 14 days (less than 4 weeks of history for this weekday)",
}


@dataclass(frozen=True)
class Baseline:
    """Which days the baseline is the median of, and why; ``days`` empty: no baseline."""

    kind: str | None  # WEEKDAY | RECENT | None
    days: tuple[dt.date, ...]
    reason: str = ""  # why there is no baseline

    @property
    def text(self) -> str:
        return BASELINE_TEXT[self.kind] if self.kind else self.reason


def baseline_days(day: dt.date, days_with_data: Iterable[dt.date]) -> Baseline:
    """The baseline days of ``day``: the same weekday of the previous 4 weeks when all have
    data, else the previous 14 days that have data (at least 7), else none."""
    have = set(days_with_data)
    weekly = tuple(day - dt.timedelta(weeks=w) for w in range(WEEKS, 0, -1))
    if all(d in have for d in weekly):
        return Baseline(WEEKDAY, weekly)
    recent = tuple(d for d in (day - dt.timedelta(days=n) for n in range(RECENT_DAYS, 0, -1)) if d in have)
    if len(recent) >= MIN_RECENT_DAYS:
        return Baseline(RECENT, recent)
    return Baseline(
        None,
        (),
        f"not enough history: {len(recent)} of the previous {RECENT_DAYS} days have usage data "
        f"(at least {MIN_RECENT_DAYS} needed)",
    )


def median_micros(values: Sequence[int]) -> int:
    """The median, half-up to the micro-dollar for an even count."""
    ordered = sorted(values)
    if not ordered:
        return 0
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid] + 1) // 2


@dataclass(frozen=True)
class ResourceDriver:
    resource_id: str
    current_usd: Decimal
    baseline_usd: Decimal

    @property
    def difference_usd(self) -> Decimal:
        return self.current_usd - self.baseline_usd


@dataclass(frozen=True)
class Anomaly:
    """One series of one day above its baseline by both thresholds."""

    day: dt.date
    dimension: str  # TOTAL | MODEL | TEAM
    value: str  # FLEET, the model (or "Unattributed"), the team
    current_usd: Decimal  # the day's spend (so far, for a partial day)
    baseline_usd: Decimal
    baseline_kind: str  # WEEKDAY | RECENT
    baseline_days: tuple[dt.date, ...]
    partial_until: dt.datetime | None = None  # UTC end of the hours compared; None: the whole day
    drivers: tuple[ResourceDriver, ...] = ()

    @property
    def excess_usd(self) -> Decimal:
        return self.current_usd - self.baseline_usd

    @property
    def excess_pct(self) -> Decimal | None:
        """Percent above the baseline; None for a $0 baseline (new spend: no finite percent)."""
        if not self.baseline_usd:
            return None
        return self.excess_usd / self.baseline_usd * 100

    @property
    def team(self) -> str | None:
        return self.value if self.dimension == TEAM else None


SeriesKey = tuple[str, str]  # (dimension, value)


def is_anomalous(current_micros: int, baseline_micros: int, pct: Decimal, min_usd: Decimal) -> bool:
    """Both thresholds: at least ``min_usd`` and at least ``pct`` percent above the baseline."""
    excess = current_micros - baseline_micros
    if excess <= 0:
        return False
    return micros_to_dollars(excess) >= min_usd and excess * 100 >= baseline_micros * pct


def find_anomalies(
    day: dt.date,
    series: Mapping[SeriesKey, Mapping[dt.date, int]],
    baseline: Baseline,
    pct: Decimal,
    min_usd: Decimal,
    partial_until: dt.datetime | None = None,
) -> list[Anomaly]:
    """The series of ``day`` above their baseline by both thresholds, largest excess first.
    ``series`` maps (dimension, value) to micro-dollars per day (the day and its baseline days,
    over the same hours)."""
    if baseline.kind is None:
        return []
    found = []
    for (dimension, value), by_day in series.items():
        current = by_day.get(day, 0)
        base = median_micros([by_day.get(d, 0) for d in baseline.days])
        if is_anomalous(current, base, pct, min_usd):
            found.append(
                Anomaly(
                    day,
                    dimension,
                    value,
                    micros_to_dollars(current),
                    micros_to_dollars(base),
                    baseline.kind,
                    baseline.days,
                    partial_until,
                )
            )
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    return sorted(found, key=lambda a: (order[a.dimension], -a.excess_usd, a.value))


def top_resources(
    day: dt.date, by_resource: Mapping[str, Mapping[dt.date, int]], days: Sequence[dt.date]
) -> tuple[ResourceDriver, ...]:
    """The ``TOP_RESOURCES`` resources whose spend on ``day`` rose most over their median on
    ``days`` (only those that rose)."""
    drivers = []
    for resource_id, by_day in by_resource.items():
        current = by_day.get(day, 0)
        base = median_micros([by_day.get(d, 0) for d in days])
        if current > base:
            drivers.append((current - base, resource_id, current, base))
    drivers.sort(key=lambda d: (-d[0], d[1]))
    return tuple(
        ResourceDriver(rid, micros_to_dollars(cur), micros_to_dollars(base))
        for _, rid, cur, base in drivers[:TOP_RESOURCES]
    )
