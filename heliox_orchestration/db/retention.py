"""``HELIOX_RETENTION_DAYS``: how long hourly usage rows are kept, and the daily upkeep.

The window is today and the N local days before it (in ``TIMEZONE``): rows before the start of
local day ``today - N`` are outside it. On PostgreSQL a month partition is dropped only when it
ends at or before that instant (no row of the window is ever in it), so up to a month more than N
days stays; rows of the default partition outside the window are deleted. On SQLite the rows are
deleted. Only ``gpu_usage_hourly`` is trimmed: the derived tables (daily costs, summaries,
recommendations, rollups) keep their history.

The same upkeep creates the month partitions of this month and the next ahead of the writers,
and gives any month the default partition holds its own partition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, delete, text

from heliox_orchestration.db.schema import USAGE_DEFAULT_PARTITION, gpu_usage_rows
from heliox_orchestration.db.usage_partitions import (
    drop_month_partitions,
    ensure_usage_partitions,
    is_partitioned,
    month_start,
    next_month,
    sweep_default_partition,
)
from heliox_orchestration.ingest.pending import USAGE_WRITE_LOCK
from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.settings import Settings


def retention_cutoff(settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """The first UTC instant inside the window; None when every row is kept."""
    if settings.retention_days is None:
        return None
    first_day = settings.today(now) - dt.timedelta(days=settings.retention_days)
    return local_day_bounds(first_day, settings.timezone)[0]


@dataclass(frozen=True)
class UpkeepResult:
    cutoff: dt.datetime | None
    dropped: list[tuple[str, int]]  # month partitions dropped, with the rows they held
    deleted_rows: int  # rows deleted one by one (SQLite, or PostgreSQL's default partition)
    created: list[str]  # month partitions created

    @property
    def removed_rows(self) -> int:
        return self.deleted_rows + sum(rows for _, rows in self.dropped)

    def describe(self) -> str:
        if self.cutoff is None:
            kept = "HELIOX_RETENTION_DAYS is unset: every usage row is kept"
        else:
            months = ", ".join(f"{name} ({rows:,} rows)" for name, rows in self.dropped) or "none"
            kept = (
                f"usage rows before {self.cutoff:%Y-%m-%d %H:%M} UTC are outside the retention: "
                f"{self.removed_rows:,} removed (partitions dropped: {months}; rows deleted: "
                f"{self.deleted_rows:,})"
            )
        created = f"; partitions created: {', '.join(self.created)}" if self.created else ""
        return kept + created


def usage_upkeep(engine: Engine, settings: Settings, now: dt.datetime) -> UpkeepResult:
    """Apply the retention and create the coming month partitions, in one transaction."""
    cutoff = retention_cutoff(settings, now)
    dropped: list[tuple[str, int]] = []
    deleted = 0
    with engine.begin() as conn:
        partitioned = is_partitioned(conn)
        if partitioned:
            # The import's and the pending release's lock: no usage write runs meanwhile.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": USAGE_WRITE_LOCK})
            created = sweep_default_partition(conn)
            created += ensure_usage_partitions(conn, now, next_month(month_start(now)))
        else:
            created = []
        if cutoff is not None:
            if partitioned:
                dropped = drop_month_partitions(conn, cutoff)
                old = text(f"DELETE FROM {USAGE_DEFAULT_PARTITION} WHERE usage_hour < :cutoff")
                deleted = conn.execute(old, {"cutoff": cutoff}).rowcount or 0
            else:
                old_rows = delete(gpu_usage_rows).where(gpu_usage_rows.c.usage_hour < cutoff)
                deleted = conn.execute(old_rows).rowcount or 0
    return UpkeepResult(cutoff, dropped, deleted, created)
