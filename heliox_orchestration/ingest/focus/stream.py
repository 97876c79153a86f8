"""The FOCUS import's streaming write on PostgreSQL: each chunk of the file is written while the
next one is read, in the one transaction of the import.

Most exports charge each resource-hour on one line, hold no corrections and bring hours the
database does not store yet. Then a chunk's charges, spread over their hours, are already the
final rows, and nothing needs the whole file before writing: a writer thread COPYs each chunk
into the tables (the server parses it on the other core) while the main thread reads and
validates the next. A bad value anywhere rolls the transaction back, so the database is left as
it was, exactly as when the whole file is validated first.

When the file is not of that kind, ``NotStreamable`` says why and the caller imports it the
general way (``hours``: spool, sum, net, then write): a chunk with a correction, two parts of one
resource-hour within a chunk, or the tables' primary keys refusing a resource-hour that another
chunk of the file, or the database, already holds.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.db.bulk import CopyTargets, copy_usage_rows
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_pending
from heliox_orchestration.ingest.focus.charges import TagKeys
from heliox_orchestration.ingest.focus.files import ProgressFactory, located
from heliox_orchestration.ingest.focus.hours import (
    FocusState,
    Totals,
    charge_parts,
    checked_hours,
    distinct_hours,
    final_rows,
    total_error,
)
from heliox_orchestration.ingest.focus.report import ImportReport
from heliox_orchestration.ingest.pending import release_due_usage, serialize_usage_writes

# COPYs handed to the writer and not yet done: the main thread reads ahead at most this many,
# so memory stays a few COPYs whatever the file.
WRITES_AHEAD = 1
# Rows per COPY, sorted by primary key: the more rows of a resource one COPY holds, the fewer
# times each index page is written (the server's cost of an export ordered by hour).
COPY_ROWS = 100_000
_UNIQUE_VIOLATION = "23505"


class NotStreamable(Exception):
    """The file needs the general import (the message says why); nothing was written."""


def can_stream(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


def stream_focus(
    engine: Callable[[], Engine],
    path: Path,
    *,
    tag_keys: TagKeys,
    chunk_rows: int,
    progress: ProgressFactory | None,
    now: dt.datetime,
    max_hourly_cost_usd: Decimal,
) -> ImportReport:
    """Read, validate and write the file in one pass (``engine`` is opened once a chunk has
    rows to write); raises ImportInputError for a bad value and NotStreamable for a file that
    needs the general import, in both cases with nothing written."""
    with located(path):
        state, totals = FocusState(), Totals(now)
        resources: set[str] = set()
        writer: _Writer | None = None
        first_error = None
        try:
            for parts, parquet in charge_parts(path, tag_keys, chunk_rows, progress, now, state):
                if not parts.num_rows:
                    continue
                if pc.any(parts.column("_correction")).as_py():
                    raise NotStreamable("the file corrects charges (ChargeClass Correction)")
                parts = parts.drop_columns(["_correction"])
                if not distinct_hours(parts):
                    raise NotStreamable("a resource-hour is charged on more than one line")
                # As the general import: every value is checked before an hourly total is refused.
                error = total_error(checked_hours(parts), path, parquet, max_hourly_cost_usd)
                if error is not None and (first_error is None or error[:2] < first_error[:2]):
                    first_error = error
                if first_error is not None:
                    continue
                final = final_rows(parts)
                new = set(pc.unique(final.column("resource_id")).to_pylist()) - resources
                resources |= new
                totals.add(final, len(new))
                if writer is None:
                    writer = _Writer(engine, now)  # opens the database on its thread
                writer.write(final)
            if first_error is not None:
                raise first_error[2]
            released = writer.commit() if writer is not None else 0
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        return replace(totals.report(path, state), released_rows=released)


class _Writer:
    """The import's transaction on a thread of its own: each ``write`` is COPYed there, in order,
    while the caller goes on; ``commit`` or ``abort`` ends it."""

    def __init__(self, engine: Callable[[], Engine], now: dt.datetime) -> None:
        self._now = now
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heliox-import-write")
        self._queued: deque[Future[Any]] = deque()
        self._conn: Connection | None = None
        self._released = 0
        self._targets = CopyTargets()
        self._gathered: list[pa.Table] = []
        self._submit(self._begin, engine)

    def _begin(self, open_engine: Callable[[], Engine]) -> None:
        # Opening (and on a new database creating the schema) overlaps the reading of the file.
        engine = open_engine()
        if not can_stream(engine):
            raise NotStreamable(f"COPY needs PostgreSQL through psycopg2, not {engine.dialect.name}")
        self._conn = engine.connect()
        self._conn.begin()
        serialize_usage_writes(self._conn)
        # Due hours of earlier imports first: what the primary keys then refuse is a real overlap.
        self._released = release_due_usage(self._conn, self._now)

    def write(self, rows: pa.Table) -> None:
        self._gathered.append(rows)
        if sum(t.num_rows for t in self._gathered) >= COPY_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._gathered:
            self._submit(self._copy, pa.concat_tables(self._gathered))
            self._gathered = []

    def _copy(self, rows: pa.Table) -> None:
        assert self._conn is not None
        now = pa.scalar(self._now, pa.timestamp("us", "UTC"))
        started = pc.less_equal(rows.column("usage_hour"), now)
        if pc.all(started).as_py():  # the common case: no copy of the rows
            copy_usage_rows(self._conn, rows, gpu_usage_hourly, self._targets)
            return
        for table, held in ((gpu_usage_hourly, False), (gpu_usage_pending, True)):
            part = rows.filter(pc.invert(started) if held else started)
            if part.num_rows:
                copy_usage_rows(self._conn, part, table, self._targets)

    def _submit(self, task: Callable[..., None], *args: Any) -> None:
        while len(self._queued) >= WRITES_AHEAD:
            self._result(self._queued.popleft())
        self._queued.append(self._pool.submit(task, *args))

    def _result(self, future: Future[Any]) -> None:
        try:
            future.result()
        except Exception as exc:
            # COPY raises the DBAPI's error (on its cursor), SQLAlchemy statements wrap it.
            cause = exc.orig if isinstance(exc, IntegrityError) else exc
            if getattr(cause, "pgcode", None) == _UNIQUE_VIOLATION:
                raise NotStreamable("a resource-hour is stored already, or charged in two chunks") from None
            raise

    def commit(self) -> int:
        self._flush()
        while self._queued:
            self._result(self._queued.popleft())
        self._pool.submit(self._end, True).result()
        self._pool.shutdown()
        return self._released

    def abort(self) -> None:
        for future in self._queued:
            future.cancel()
        self._pool.submit(self._end, False).result()
        self._pool.shutdown()

    def _end(self, commit: bool) -> None:
        if self._conn is None:
            return
        try:
            if commit:
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()
            self._conn = None
