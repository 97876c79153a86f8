"""Month partitions of the usage table on PostgreSQL, the one place that creates and drops them.

The table (``gpu_usage_rows``, read through the view ``gpu_usage_hourly``) is partitioned by range
of ``usage_hour``, one partition per UTC month named ``gpu_usage_hourly_YYYY_MM``, plus a default
partition that catches a row of a month nobody created yet (so no insert ever fails for want of a
partition). Every writer calls
``ensure_usage_partitions`` for the hours it is about to write; a month that already has rows in
the default partition is created by moving them (the default partition must not hold rows of a
month that gets its own partition). On SQLite, and on a table that is not partitioned, every
function here does nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, text

from heliox_orchestration.db.schema import USAGE_DEFAULT_PARTITION, gpu_usage_hourly, gpu_usage_rows

PARENT = gpu_usage_rows.name
# Partitions are named after the logical table (the view readers select from).
PREFIX = gpu_usage_hourly.name
# pg_advisory_xact_lock key: two writers creating the same month wait for each other.
PARTITION_LOCK = 0x48454C494F59


@dataclass(frozen=True)
class MonthPartition:
    name: str
    start: dt.datetime  # first UTC instant of the month
    end: dt.datetime  # first UTC instant of the next month


def month_start(instant: dt.datetime) -> dt.datetime:
    utc = instant.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, 1, tzinfo=dt.UTC)


def next_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def month_partition(instant: dt.datetime) -> MonthPartition:
    start = month_start(instant)
    return MonthPartition(f"{PREFIX}_{start:%Y_%m}", start, next_month(start))


def months_between(first: dt.datetime, last: dt.datetime) -> list[MonthPartition]:
    """The month partitions holding every instant from ``first`` through ``last``."""
    months = []
    start = month_start(first)
    while start <= last:
        months.append(month_partition(start))
        start = next_month(start)
    return months


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": PARENT})
    return kind.scalar() == "p"


def month_partitions(conn: Connection) -> list[MonthPartition]:
    """The month partitions that exist, oldest first (the default partition is not one)."""
    if not is_partitioned(conn):
        return []
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": PARENT},
    ).scalars()
    found = []
    for name in names:
        suffix = name.removeprefix(f"{PREFIX}_")
        year, _, month = suffix.partition("_")
        if year.isdigit() and month.isdigit():
            found.append(month_partition(dt.datetime(int(year), int(month), 1, tzinfo=dt.UTC)))
    return sorted(found, key=lambda p: p.start)


def ensure_usage_partitions(conn: Connection, first: dt.datetime, last: dt.datetime) -> list[str]:
    """Create the month partitions for ``first`` through ``last`` that do not exist yet; returns
    the names created. Call it before writing those hours.

    Creating a partition locks the whole table (ACCESS EXCLUSIVE) until its transaction ends, so
    when the caller's transaction holds no lock on the table yet, the months are created in a
    short transaction of their own (an empty month left behind by a failed write is harmless);
    otherwise in the caller's transaction, which could not wait for itself."""
    if not is_partitioned(conn):
        return []
    wanted = months_between(first, last)
    existing = {p.name for p in month_partitions(conn)}
    missing = [p for p in wanted if p.name not in existing]
    if not missing:
        return []
    if conn.in_transaction() and not _holds_usage_lock(conn):
        with conn.engine.begin() as own:
            return _create_months(own, missing)
    return _create_months(conn, missing)


def _holds_usage_lock(conn: Connection) -> bool:
    held = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND relation IN (to_regclass(:parent), to_regclass(:default)))"
        ),
        {"parent": PARENT, "default": USAGE_DEFAULT_PARTITION},
    )
    return bool(held.scalar())


def _create_months(conn: Connection, missing: list[MonthPartition]) -> list[str]:
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK})
    existing = {p.name for p in month_partitions(conn)}  # another writer may have made them
    created = []
    for month in missing:
        if month.name not in existing:
            _create_month(conn, month)
            created.append(month.name)
    return created


def _create_month(conn: Connection, month: MonthPartition) -> None:
    bounds = {"start": month.start, "end": month.end}
    in_month = "usage_hour >= :start AND usage_hour < :end"
    has_rows = conn.execute(
        text(f"SELECT EXISTS (SELECT 1 FROM {USAGE_DEFAULT_PARTITION} WHERE {in_month})"), bounds
    ).scalar()
    values = f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    if not has_rows:
        conn.execute(text(f"CREATE TABLE {month.name} PARTITION OF {PARENT} {values}"))
        return
    # Attaching checks the default partition holds no row of the month: move them first.
    conn.execute(text(f"CREATE TABLE {month.name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {USAGE_DEFAULT_PARTITION} WHERE {in_month} RETURNING *) "
            f"INSERT INTO {month.name} SELECT * FROM moved ORDER BY usage_hour"
        ),
        bounds,
    )
    conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {month.name} {values}"))


def sweep_default_partition(conn: Connection) -> list[str]:
    """Give every month that has rows in the default partition its own partition (moving the
    rows); returns the partitions created."""
    if not is_partitioned(conn):
        return []
    bounds = conn.execute(
        text(f"SELECT min(usage_hour), max(usage_hour) FROM {USAGE_DEFAULT_PARTITION}")
    ).one()
    if bounds[0] is None:
        return []
    return ensure_usage_partitions(conn, bounds[0], bounds[1])


def drop_month_partitions(conn: Connection, before: dt.datetime) -> list[tuple[str, int]]:
    """Drop every month partition that ends at or before ``before`` (no partition holding an
    hour at or after it); returns (name, rows it held) of each dropped."""
    dropped = []
    for month in month_partitions(conn):
        if month.end <= before:
            rows = conn.execute(text(f"SELECT count(*) FROM {month.name}")).scalar_one()
            conn.execute(text(f"DROP TABLE {month.name}"))
            dropped.append((month.name, int(rows)))
    return dropped
