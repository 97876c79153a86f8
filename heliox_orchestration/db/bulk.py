"""Fast bulk writes of hourly usage rows, shared by the demo generator and the FOCUS import.

A frame holds the columns of ``gpu_usage_hourly`` except ``cost_usd``, plus ``cost_micros``
(the exact cost in integer micro-dollars); ``usage_hour`` is a UTC datetime64 column. Optional
columns (``OPTIONAL_COLUMNS``) may be absent: they are written as NULL. Rows for
``gpu_usage_hourly`` (a view) go to ``gpu_usage_rows``, each resource_id replaced by its key
(new resources registered first, in the same transaction: db/usage_store.py).

Writes stream in batches of ``WRITE_BATCH_ROWS``: on PostgreSQL each batch is one ``COPY`` from a
buffer holding only that batch, on SQLite one ``executemany``; so the text of the whole frame is
never held at once, and a progress callback hears of each batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, Table, delete, select, tuple_

from heliox_orchestration.db.copy_binary import (
    CopyStream,
    copy_data,
    int4_fields,
    null_fields,
    numeric_fields,
    records,
    text_fields,
    timestamp_fields,
)
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_rows, sqlite_datetime_text
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions
from heliox_orchestration.db.usage_store import (
    ROW_COLUMNS,
    delete_usage_from,
    insert_usage_from,
    resource_keys,
)
from heliox_orchestration.money import micros_to_dollars

COLUMNS = [c.name for c in gpu_usage_hourly.columns]
OPTIONAL_COLUMNS = ("pricing_category",)
WRITE_BATCH_ROWS = 100_000
# SQLite keeps money as REAL (a double). Below $2**31 a double is within 0.13 micro-dollar of
# the exact amount, so both reading paths (``Money``'s quantize, ``money_sum_micros``'s ROUND of
# x * 1e6) give back the exact micro-dollars; the import refuses hours anywhere near that.
SQLITE_EXACT_MICROS = 2**31 * 1_000_000
_COPY_HOUR = "%Y-%m-%d %H:%M:%S+00"


def micros_text(micros: Any) -> list[str]:
    """Integer micro-dollars as exact decimal text with six decimals (-1 -> "-0.000001"),
    without going through a float."""
    values = np.asarray(micros, dtype=np.int64)
    whole, fraction = np.divmod(np.abs(values), 1_000_000)
    text = [f"{w}.{f:06d}" for w, f in zip(whole.tolist(), fraction.tolist(), strict=True)]
    for i in np.flatnonzero(values < 0).tolist():
        text[i] = "-" + text[i]
    return text


def micros_real(micros: Any) -> list[float]:
    """Integer micro-dollars as the doubles SQLite's REAL stores: the nearest double to each exact
    amount (the division of two exactly represented integers rounds correctly), the same value
    ``Money`` binds for the same Decimal."""
    values = np.asarray(micros, dtype=np.int64)
    if len(values) and int(np.abs(values).max()) >= SQLITE_EXACT_MICROS:
        raise ValueError("SQLite stores money as REAL: amounts of $2,147,483,648 or more are not exact there")
    return (values / 1_000_000).tolist()


def insert_usage_frame(
    conn: Connection,
    frame: pd.DataFrame,
    table: Table = gpu_usage_hourly,
    progress: Callable[[int], None] | None = None,
) -> None:
    """COPY on PostgreSQL/psycopg2, raw ``executemany`` on SQLite, SQLAlchemy ``executemany``
    otherwise, ``WRITE_BATCH_ROWS`` rows at a time (``progress`` hears of each batch's rows).
    ``table`` must have the columns of ``gpu_usage_hourly``; writing to that table, the month
    partitions of the frame's hours are created first."""
    columns = [c.name for c in table.columns]
    if table is gpu_usage_hourly:
        table, columns = gpu_usage_rows, ROW_COLUMNS
        if len(frame):
            ensure_frame_partitions(conn, frame)
    missing = {c: None for c in OPTIONAL_COLUMNS if c not in frame}
    for first in range(0, len(frame), WRITE_BATCH_ROWS):
        batch = frame.iloc[first : first + WRITE_BATCH_ROWS]
        batch = batch.assign(**missing) if missing else batch
        if table is gpu_usage_rows:
            keys = resource_keys(conn, batch["resource_id"].dropna().unique().tolist())
            batch = batch.assign(resource_key=batch["resource_id"].map(keys).astype("Int64"))
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
            _copy_postgres(conn, batch, table.name, columns)
        elif conn.dialect.name == "sqlite":
            _executemany_sqlite(conn, batch, table.name, columns)
        else:
            _insert_core(conn, batch, table, columns)
        if progress:
            progress(len(batch))


def ensure_frame_partitions(conn: Connection, frame: pd.DataFrame) -> None:
    hours = frame["usage_hour"]
    ensure_usage_partitions(conn, hours.min().to_pydatetime(), hours.max().to_pydatetime())


def _copy_postgres(conn: Connection, frame: pd.DataFrame, table_name: str, columns: list[str]) -> None:
    table = pa.Table.from_pandas(frame[[c for c in columns if c != "cost_usd"]], preserve_index=False)
    if "gpu_utilization_pct" in columns:
        utilization = table.column("gpu_utilization_pct")
        table = table.set_column(
            table.schema.get_field_index("gpu_utilization_pct"),
            "gpu_utilization_pct",
            utilization.cast(pa.float64()),
        )
    micros = pa.array(frame["cost_micros"].to_numpy(dtype=np.int64))
    copy_table(conn, table.append_column("cost_micros", micros), table_name, columns)


def copy_table(conn: Connection, rows: pa.Table, table_name: str, columns: list[str]) -> None:
    """One COPY of ``rows`` (the ``columns`` but ``cost_usd``, plus ``cost_micros``) into
    ``table_name`` on psycopg2: binary (``copy_binary``) unless a utilization is known (a
    float, whose decimal rounding only the text path reproduces), else CSV written by pyarrow."""
    data: CopyStream | pa.BufferReader
    if rows.column("gpu_utilization_pct").null_count == rows.num_rows:
        fields = [f for c in columns for f in _binary_fields(rows, c)]
        form, data = "binary", CopyStream(copy_data(rows.num_rows, len(columns), fields))
        size = 1 << 30  # the parts are returned whole whatever is asked
    else:
        form, data = "csv", _csv_data(rows, columns)
        size = max(data.size(), 1)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # One read per part: psycopg2 reads 8 KiB at a time by default, taking the GIL back for
        # each, which a writer thread beside a busy main thread waits for.
        sql = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT {form})"
        cursor.copy_expert(sql, data, size=size)
    finally:
        cursor.close()


def _binary_fields(rows: pa.Table, column: str) -> list[pa.Array]:
    if column == "cost_usd":
        return [records(numeric_fields(rows.column("cost_micros").to_numpy(), 6))]
    values = rows.column(column).combine_chunks()
    if column == "usage_hour":
        return [records(timestamp_fields(values))]
    if column in ("resource_key", "gpu_count"):
        return [records(int4_fields(values))]
    if column == "gpu_utilization_pct":
        return [records(null_fields(rows.num_rows))]
    return text_fields(values)


def _csv_data(rows: pa.Table, columns: list[str]) -> pa.BufferReader:
    """The rows as CSV: a null is an unquoted empty field (COPY's NULL), an empty text a quoted one."""
    # Hours and costs repeat: each distinct value is formatted once (strftime is slow per value).
    hours = _distinct_text(rows.column("usage_hour"), lambda h: pc.strftime(h, format=_COPY_HOUR))
    rows = rows.set_column(rows.schema.get_field_index("usage_hour"), "usage_hour", hours)
    micros = rows.column("cost_micros")
    costs = _distinct_text(micros, lambda m: pa.array(micros_text(m.to_numpy()), type=pa.string()))
    rows = rows.append_column("cost_usd", costs).select(columns)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(rows, sink, pa_csv.WriteOptions(include_header=False))
    return pa.BufferReader(sink.getvalue())


@dataclass
class CopyTargets:
    """What a transaction's COPYs made sure of already: the keys of the resources registered
    and the span of hours whose month partitions exist. Only valid within that transaction."""

    keys: dict[str, int] = field(default_factory=dict)
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    def ensure_months(self, conn: Connection, first: dt.datetime, last: dt.datetime) -> None:
        if self.first is not None and self.last is not None:
            if self.first <= first and last <= self.last:
                return
            first, last = min(first, self.first), max(last, self.last)
        ensure_usage_partitions(conn, first, last)
        self.first, self.last = first, last

    def resource_keys(self, conn: Connection, resource_ids: list[str]) -> list[int]:
        new = [r for r in resource_ids if r not in self.keys]
        if new:
            self.keys.update(resource_keys(conn, new))
        return [self.keys[r] for r in resource_ids]


def copy_usage_rows(
    conn: Connection, rows: pa.Table, table: Table = gpu_usage_hourly, targets: CopyTargets | None = None
) -> None:
    """COPY hourly rows held in Arrow (the columns of ``gpu_usage_hourly`` but ``cost_usd``,
    plus ``cost_micros``; optional ones may be absent) into ``table`` on PostgreSQL/psycopg2:
    into ``gpu_usage_rows`` for ``gpu_usage_hourly``, its month partitions created and its
    resources registered first (``targets`` remembers both across the transaction's COPYs)."""
    for name, field_type in (("gpu_utilization_pct", pa.float64()), ("pricing_category", pa.string())):
        if name not in rows.column_names:
            rows = rows.append_column(name, pa.nulls(rows.num_rows, field_type))
    if table is not gpu_usage_hourly:
        copy_table(conn, rows, table.name, [c.name for c in table.columns])
        return
    targets = targets or CopyTargets()
    first, last = pc.min_max(rows.column("usage_hour")).values()
    targets.ensure_months(conn, first.as_py(), last.as_py())
    encoded = pc.dictionary_encode(rows.column("resource_id")).combine_chunks()
    keys = targets.resource_keys(conn, encoded.dictionary.to_pylist())
    resource_key = pa.array(keys, type=pa.int64()).take(encoded.indices)
    # In primary-key order: each index page is touched once per batch, not once per row (2.5x
    # faster COPY for an export ordered by hour, as most are).
    rows = rows.append_column("resource_key", resource_key).sort_by(
        [("resource_key", "ascending"), ("usage_hour", "ascending")]
    )
    copy_table(conn, rows, gpu_usage_rows.name, ROW_COLUMNS)


def _distinct_text(
    values: pa.Array | pa.ChunkedArray, format_values: Callable[[pa.Array], pa.Array]
) -> pa.Array:
    """``format_values`` of each value, called on the distinct values only."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    return format_values(encoded.dictionary).take(encoded.indices)


def _executemany_sqlite(conn: Connection, frame: pd.DataFrame, table_name: str, columns: list[str]) -> None:
    values: list[list[Any]] = []
    for c in columns:
        if c == "usage_hour":
            values.append([sqlite_datetime_text(h) for h in frame["usage_hour"].dt.to_pydatetime()])
        elif c == "cost_usd":
            values.append(micros_real(frame["cost_micros"]))
        elif c == "gpu_utilization_pct":
            values.append(frame[c].tolist())
        else:
            values.append(frame[c].astype(object).where(frame[c].notna(), None).tolist())
    placeholders = ", ".join("?" * len(columns))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        sql = f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({placeholders})"
        cursor.executemany(sql, list(zip(*values, strict=True)))
    finally:
        cursor.close()


def _insert_core(conn: Connection, frame: pd.DataFrame, table: Table, columns: list[str]) -> None:
    values = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = [
        {
            **{str(k): v for k, v in row.items()},
            "usage_hour": row["usage_hour"].to_pydatetime(),
            "cost_usd": micros_to_dollars(micros),
        }
        for row, micros in zip(
            values[[c for c in columns if c != "cost_usd"]].to_dict("records"),
            frame["cost_micros"].tolist(),
            strict=True,
        )
    ]
    conn.execute(table.insert(), records)


_STAGE = Table(
    "heliox_usage_stage",
    MetaData(),
    *(Column(c.name, c.type, nullable=c.nullable) for c in gpu_usage_hourly.columns),
    PrimaryKeyConstraint("resource_id", "usage_hour"),
    prefixes=["TEMPORARY"],
)


def stage_usage_rows(
    conn: Connection,
    frames: pd.DataFrame | Iterable[pd.DataFrame],
    progress: Callable[[int], None] | None = None,
) -> Table:
    """The rows of a frame (or of frames, one at a time) in a temporary table with the columns
    of ``gpu_usage_hourly``, loaded by the bulk path, so that replacing stored rows takes a few
    set-based statements whatever the size. Drop it with ``drop_stage`` before the transaction
    ends."""
    if conn.dialect.name == "sqlite":
        # A SQLite temporary table survives a failed transaction on a pooled connection.
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{_STAGE.name}")
    _STAGE.create(conn)
    for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
        insert_usage_frame(conn, frame, _STAGE, progress)
    if conn.dialect.name == "postgresql":
        # A temporary table has no statistics: without them the planner guesses the join badly.
        conn.exec_driver_sql(f"ANALYZE {_STAGE.name}")
    return _STAGE


def delete_staged_hours(conn: Connection, table: Table) -> int:
    """Delete the rows of ``table`` whose (resource_id, usage_hour) is staged; returns how many."""
    if table is gpu_usage_hourly:
        return delete_usage_from(conn, _STAGE)
    staged = tuple_(table.c.resource_id, table.c.usage_hour).in_(
        select(_STAGE.c.resource_id, _STAGE.c.usage_hour)
    )
    return conn.execute(delete(table).where(staged)).rowcount or 0


def drop_stage(conn: Connection) -> None:
    # Not in a finally: after a PostgreSQL error the transaction only accepts a rollback,
    # which removes the table anyway.
    _STAGE.drop(conn)


def replace_usage_hours(conn: Connection, frame: pd.DataFrame) -> int:
    """Write the frame's rows, replacing stored rows of the same (resource_id, usage_hour);
    returns how many stored rows were replaced. No other row is touched.

    Call it inside the caller's transaction: the replacement is atomic with everything else the
    caller does.
    """
    if len(frame):
        ensure_frame_partitions(conn, frame)
    stage = stage_usage_rows(conn, frame)
    replaced = delete_staged_hours(conn, gpu_usage_hourly)
    insert_usage_from(conn, stage)
    drop_stage(conn)
    return replaced
