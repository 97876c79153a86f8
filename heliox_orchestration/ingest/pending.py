"""Imported hours that have not started yet: held in ``gpu_usage_pending`` until they do.

A FOCUS charge longer than an hour is spread over its hours, and a daily (Azure, Google Cloud) or
monthly charge for the current period covers hours that have not happened yet. The hourly table
never holds such an hour: the import writes the hours that have started (``usage_hour <= now``)
to ``gpu_usage_hourly`` and the others to ``gpu_usage_pending``, and ``release_due_usage`` moves
each held hour to ``gpu_usage_hourly`` once it has started. So a day's charge reaches the burn
rate hour by hour, as its hours elapse. The cost assets release before they compute, and every
import releases after writing.

A resource-hour lives in one of the two tables at a time: writing it replaces the stored row of
the same (resource_id, usage_hour) in both. On PostgreSQL the import and the release take one
transaction-scoped advisory lock, so that two releases (or a release and an import) running at
once cannot both move, or both write, the same resource-hour; the second waits for the first
to commit and then finds nothing left to do. SQLite runs one writing transaction at a time anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, Engine, delete, exists, func, select, text

from heliox_orchestration.db.bulk import (
    COLUMNS,
    delete_staged_hours,
    drop_stage,
    insert_usage_frame,
    stage_usage_rows,
)
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_pending
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions
from heliox_orchestration.db.usage_store import delete_usage_from, insert_usage_from

# Any fixed 64-bit number works; this one spells "HELIOX" in ASCII.
USAGE_WRITE_LOCK = 0x48454C494F58


@dataclass(frozen=True)
class ImportWrite:
    replaced: int  # stored rows of the same resource-hours, in either table
    written: int  # rows written to gpu_usage_hourly
    held: int  # rows written to gpu_usage_pending


def serialize_usage_writes(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": USAGE_WRITE_LOCK})


def write_imported_hours(
    conn: Connection,
    frames: pd.DataFrame | Iterable[pd.DataFrame],
    now: dt.datetime,
    progress: Callable[[int], None] | None = None,
    *,
    hours: tuple[dt.datetime, dt.datetime] | None = None,
) -> ImportWrite:
    """Write the resource-hours of a frame (or of frames, streamed one at a time): started ones
    to ``gpu_usage_hourly``, the others to ``gpu_usage_pending``, replacing the stored rows of
    the same resource-hours in both tables. Runs in the caller's transaction; ``progress`` hears
    of the rows loaded, batch by batch. ``hours``, the first and last ``usage_hour`` of the
    frames when the caller knows them: if neither table stores a row in that range, nothing can
    be replaced, and the rows go straight to their tables instead of through the stage."""
    serialize_usage_writes(conn)
    if hours is not None and not _stored_between(conn, *hours):
        return _write_new_hours(conn, [frames] if isinstance(frames, pd.DataFrame) else frames, now, progress)
    stage = stage_usage_rows(conn, frames, progress)
    # The months of the started hours, known once the stage holds them all (the frames stream).
    first, last = conn.execute(
        select(func.min(stage.c.usage_hour), func.max(stage.c.usage_hour)).where(stage.c.usage_hour <= now)
    ).one()
    if first is not None:
        ensure_usage_partitions(conn, first, last)
    replaced = delete_staged_hours(conn, gpu_usage_hourly) + delete_staged_hours(conn, gpu_usage_pending)
    started = stage.c.usage_hour <= now
    written = insert_usage_from(conn, stage, started)
    held = conn.execute(
        gpu_usage_pending.insert().from_select(
            COLUMNS, select(*(stage.c[c] for c in COLUMNS)).where(~started)
        )
    ).rowcount
    drop_stage(conn)
    return ImportWrite(replaced=replaced, written=written, held=held or 0)


def _stored_between(conn: Connection, first: dt.datetime, last: dt.datetime) -> bool:
    return any(
        conn.execute(select(exists().where(table.c.usage_hour.between(first, last)))).scalar()
        for table in (gpu_usage_hourly, gpu_usage_pending)
    )


def _write_new_hours(
    conn: Connection, frames: Iterable[pd.DataFrame], now: dt.datetime, progress: Callable[[int], None] | None
) -> ImportWrite:
    written = held = 0
    cutoff = pd.Timestamp(now).tz_convert("UTC")
    for frame in frames:
        started = (frame["usage_hour"] <= cutoff).to_numpy()
        for table, rows in ((gpu_usage_hourly, frame[started]), (gpu_usage_pending, frame[~started])):
            if len(rows):
                insert_usage_frame(conn, rows, table, progress)
        written += int(started.sum())
        held += int((~started).sum())
    return ImportWrite(replaced=0, written=written, held=held)


def release_due_usage(database: Connection | Engine, now: dt.datetime) -> int:
    """Move every held resource-hour that has started (``usage_hour <= now``) into
    ``gpu_usage_hourly``, replacing a stored row of the same resource-hour; returns how many
    moved. Atomic (one transaction: the caller's, when given a Connection in one), idempotent,
    and safe when several callers run it at once."""
    if isinstance(database, Engine):
        with database.begin() as conn:
            return _release(conn, now)
    if database.in_transaction():
        return _release(database, now)
    with database.begin():
        return _release(database, now)


def _release(conn: Connection, now: dt.datetime) -> int:
    due = gpu_usage_pending.c.usage_hour <= now
    # Nothing due is the common case: answer it without waiting for an import's lock. (On
    # SQLite this read opens no transaction, so the write below does not upgrade one.)
    if not conn.execute(select(exists().where(due))).scalar():
        return 0
    serialize_usage_writes(conn)
    pending = gpu_usage_pending.c
    first = conn.execute(select(func.min(pending.usage_hour)).where(due)).scalar()
    if first is not None:
        ensure_usage_partitions(conn, first, now)
    delete_usage_from(conn, gpu_usage_pending, due)
    insert_usage_from(conn, gpu_usage_pending, due)
    return conn.execute(delete(gpu_usage_pending).where(due)).rowcount or 0
