"""``import_focus``: on PostgreSQL a FOCUS file is first written as it is read (``stream``);
otherwise both files are read and validated completely (the FOCUS rows into a spool on disk,
``spool``), then one transaction streams them to the database a partition at a time."""

from __future__ import annotations

import datetime as dt
import logging
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
from heliox_orchestration.ingest.focus.hours import DEFAULT_MAX_HOURLY_COST_USD, FocusData, read_focus
from heliox_orchestration.ingest.focus.report import ImportReport
from heliox_orchestration.ingest.focus.stream import NotStreamable, can_stream, stream_focus
from heliox_orchestration.ingest.focus.utilization import (
    UtilizationReport,
    merge_utilization,
    read_utilization,
)
from heliox_orchestration.ingest.pending import release_due_usage, write_imported_hours

log = logging.getLogger(__name__)

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
    stream: bool | None = None,
) -> ImportReport:
    """Read and validate both files completely, then (unless ``dry_run``) replace the
    resource-hours they hold in one transaction: hours that have started (``usage_hour <=
    now``) in ``gpu_usage_hourly``, the others in ``gpu_usage_pending`` until they start (and,
    in the same transaction, move the held hours of earlier imports that have started).
    ``database`` may be a function that opens it: it is called only once there is something
    valid to write, so a bad file or a dry run never touches (or creates) the database.
    ``progress`` is told of the bytes read from each file, ``write_progress`` of the rows written.

    ``stream`` (default: when ``database`` is an Engine that ``can_stream``; pass True when the
    function opens one): a FOCUS file without utilization is first tried in one pass, each
    chunk written while the next is read, in the one transaction (``stream``); a file that needs
    the whole of it to be summed is then read again and written as above."""
    now = now or clock.utc_now()
    if now.tzinfo is None:
        raise ValueError("import_focus needs a timezone-aware now")
    if stream is None:
        stream = isinstance(database, Engine) and can_stream(database)
    if stream and database is not None and utilization is None and not dry_run:
        opened = _OpenOnce(database)
        try:
            return stream_focus(
                opened,
                Path(path),
                tag_keys=tag_keys,
                chunk_rows=chunk_rows,
                progress=progress,
                now=now,
                max_hourly_cost_usd=max_hourly_cost_usd,
            )
        except NotStreamable as why:
            log.info("Reading %s again to sum it the general way: %s", path, why)
            database = opened.engine or database
    data = read_focus(
        path,
        tag_keys=tag_keys,
        chunk_rows=chunk_rows,
        progress=progress,
        now=now,
        max_hourly_cost_usd=max_hourly_cost_usd,
    )
    try:
        return _import(data, database, utilization, dry_run, chunk_rows, progress, write_progress, now)
    finally:
        data.close()


class _OpenOnce:
    """The database, opened on the first call."""

    def __init__(self, database: Engine | Callable[[], Engine]) -> None:
        self._database = database
        self.engine: Engine | None = None

    def __call__(self) -> Engine:
        if self.engine is None:
            database = self._database
            self.engine = database if isinstance(database, Engine) else database()
        return self.engine


def _import(
    data: FocusData,
    database: Engine | Callable[[], Engine] | None,
    utilization: Path | str | None,
    dry_run: bool,
    chunk_rows: int,
    progress: ProgressFactory | None,
    write_progress: WriteProgressFactory | None,
    now: dt.datetime,
) -> ImportReport:
    hourly_util: pd.DataFrame | None = None
    util_report = None
    if utilization is not None:
        hourly_util, samples = read_utilization(
            utilization, chunk_rows=chunk_rows, progress=progress, now=now
        )
        matched = sum(_with_utilization(frame, hourly_util)[1] for frame in data.frames())
        util_report = UtilizationReport(
            path=Path(utilization),
            samples=samples,
            sampled_hours=len(hourly_util),
            matched_hours=matched,
            unmatched_hours=len(hourly_util) - matched,
        )
    report = replace(
        data.report,
        dry_run=dry_run,
        utilization=util_report,
    )
    if dry_run or not report.resource_hours:
        return report
    if database is None:
        raise ValueError("import_focus needs a database unless dry_run is set")
    engine = database if isinstance(database, Engine) else database()
    bar: AbstractContextManager[Callable[[int], None]] = (
        write_progress(report.resource_hours) if write_progress else nullcontext(lambda _n: None)
    )
    frames = (_with_utilization(frame, hourly_util)[0] for frame in data.frames())
    with bar as update, engine.begin() as conn:
        assert report.first_hour is not None and report.last_hour is not None  # rows were read
        span = (report.first_hour.to_pydatetime(), report.last_hour.to_pydatetime())
        written = write_imported_hours(conn, frames, now, update, hours=span)
        released = release_due_usage(conn, now)
    return replace(report, replaced_rows=written.replaced, released_rows=released)


def _with_utilization(rows: pd.DataFrame, hourly_util: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """A partition's rows with ``gpu_utilization_pct`` (NULL where unknown) and how many got one."""
    rows = rows.assign(gpu_utilization_pct=np.nan)
    if hourly_util is None:
        return rows, 0
    merged = merge_utilization(rows, hourly_util)
    return merged, int(merged["gpu_utilization_pct"].notna().sum())
