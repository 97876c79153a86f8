"""``import_focus``: both files read and validated completely, then one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.ingest.focus.charges import DEFAULT_TAG_KEYS, TagKeys
from heliox_orchestration.ingest.focus.files import DEFAULT_CHUNK_ROWS, ProgressFactory
from heliox_orchestration.ingest.focus.hours import DEFAULT_MAX_HOURLY_COST_USD, read_focus
from heliox_orchestration.ingest.focus.report import ImportReport
from heliox_orchestration.ingest.focus.utilization import apply_utilization, read_utilization
from heliox_orchestration.ingest.pending import release_due_usage, write_imported_hours

# The number of rows to write -> a context whose value is called with each batch's rows written.
WriteProgressFactory = Callable[[int], AbstractContextManager[Callable[[int], None]]]


def import_focus(
    database: Engine | Callable[[], Engine] | None,
    path: Path | str,
    *,
    utilization: Path | str | None = None,
    dry_run: bool = False,
    tag_keys: TagKeys = DEFAULT_TAG_KEYS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFactory | None = None,
    write_progress: WriteProgressFactory | None = None,
    now: dt.datetime | None = None,
    max_hourly_cost_usd: Decimal = DEFAULT_MAX_HOURLY_COST_USD,
) -> ImportReport:
    """Read and validate both files completely, then (unless ``dry_run``) replace the
    resource-hours they hold in one transaction: hours that have started (``usage_hour <=
    now``) in ``gpu_usage_hourly``, the others in ``gpu_usage_pending`` until they start (and,
    in the same transaction, move the held hours of earlier imports that have started).
    ``database`` may be a function that opens it: it is called only once there is something
    valid to write, so a bad file or a dry run never touches (or creates) the database.
    ``progress`` is told of the bytes read from each file, ``write_progress`` of the rows written."""
    now = now or clock.utc_now()
    if now.tzinfo is None:
        raise ValueError("import_focus needs a timezone-aware now")
    data = read_focus(
        path,
        tag_keys=tag_keys,
        chunk_rows=chunk_rows,
        progress=progress,
        now=now,
        max_hourly_cost_usd=max_hourly_cost_usd,
    )
    rows = data.rows.assign(gpu_utilization_pct=np.nan)
    util_report = None
    if utilization is not None:
        hourly_util, samples = read_utilization(
            utilization, chunk_rows=chunk_rows, progress=progress, now=now
        )
        rows, util_report = apply_utilization(rows, hourly_util, samples, Path(utilization))
    held = rows["usage_hour"] > pd.Timestamp(now)
    report = replace(
        data.report,
        dry_run=dry_run,
        utilization=util_report,
        pending_hours=int(held.sum()),
        pending_until=rows["usage_hour"][held].max() if held.any() else None,
    )
    if dry_run or not len(rows):
        return report
    if database is None:
        raise ValueError("import_focus needs a database unless dry_run is set")
    engine = database if isinstance(database, Engine) else database()
    bar: AbstractContextManager[Callable[[int], None]] = (
        write_progress(len(rows)) if write_progress else nullcontext(lambda _n: None)
    )
    with bar as update, engine.begin() as conn:
        written = write_imported_hours(conn, rows, now, update)
        released = release_due_usage(conn, now)
    return replace(report, replaced_rows=written.replaced, released_rows=released)
