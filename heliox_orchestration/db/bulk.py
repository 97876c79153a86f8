"""Fast bulk writes of hourly usage rows, shared by the demo generator and the FOCUS import.

A frame holds the columns of ``gpu_usage_hourly`` except ``cost_usd``, plus ``cost_micros``
(the exact cost in integer micro-dollars); ``usage_hour`` is a UTC datetime64 column.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, Table, delete, select, tuple_

from heliox_orchestration.db.schema import gpu_usage_hourly, sqlite_datetime_text
from heliox_orchestration.money import micros_to_dollars

COLUMNS = [c.name for c in gpu_usage_hourly.columns]
# Written when the frame has them (NULL otherwise), after the columns every frame has.
OPTIONAL_COLUMNS = ["pricing_category"]
# SQLite keeps money as REAL (a double). Below $2**31 a double is within 0.13 micro-dollar of
# the exact amount, so both reading paths (``Money``'s quantize, ``money_sum_micros``'s ROUND of
# x * 1e6) give back the exact micro-dollars; the import refuses hours anywhere near that.
SQLITE_EXACT_MICROS = 2**31 * 1_000_000


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


def insert_usage_frame(conn: Connection, frame: pd.DataFrame, table: Table = gpu_usage_hourly) -> None:
    """COPY on PostgreSQL/psycopg2, raw ``executemany`` on SQLite, SQLAlchemy ``executemany``
    otherwise. ``table`` must have the columns of ``gpu_usage_hourly``."""
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _copy_postgres(conn, frame, table.name)
    elif conn.dialect.name == "sqlite":
        _executemany_sqlite(conn, frame, table.name)
    else:
        _insert_core(conn, frame, table)


def _columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in COLUMNS if c not in OPTIONAL_COLUMNS or c in frame.columns]


def _copy_postgres(conn: Connection, frame: pd.DataFrame, table_name: str) -> None:
    columns = _columns(frame)
    out = frame.assign(
        usage_hour=frame["usage_hour"].dt.strftime("%Y-%m-%d %H:%M:%S+00"),
        cost_usd=micros_text(frame["cost_micros"]),
    )[columns]
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, header=False, float_format="%.6f", na_rep="\\N")  # utilization
    buffer.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f"COPY {table_name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')",
            buffer,
        )
    finally:
        cursor.close()


def _executemany_sqlite(conn: Connection, frame: pd.DataFrame, table_name: str) -> None:
    hours = [sqlite_datetime_text(h) for h in frame["usage_hour"].dt.to_pydatetime()]
    costs = micros_real(frame["cost_micros"])
    values = frame[COLUMNS[1:8]].astype(object).where(frame[COLUMNS[1:8]].notna(), None)
    columns = _columns(frame)
    extra = frame[columns[10:]].astype(object).where(frame[columns[10:]].notna(), None)
    rows = [
        (hour, *rest, cost, util, *more)
        for hour, rest, cost, util, more in zip(
            hours,
            values.itertuples(index=False, name=None),
            costs,
            frame["gpu_utilization_pct"].tolist(),
            extra.itertuples(index=False, name=None),
            strict=True,
        )
    ]
    placeholders = ", ".join("?" * len(columns))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({placeholders})", rows)
    finally:
        cursor.close()


def _insert_core(conn: Connection, frame: pd.DataFrame, table: Table) -> None:
    values = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = [
        {
            **{str(k): v for k, v in row.items()},
            "usage_hour": row["usage_hour"].to_pydatetime(),
            "cost_usd": micros_to_dollars(micros),
        }
        for row, micros in zip(
            values[[*COLUMNS[:8], *_columns(frame)[9:]]].to_dict("records"),
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


def stage_usage_rows(conn: Connection, frame: pd.DataFrame) -> Table:
    """The frame's rows in a temporary table with the columns of ``gpu_usage_hourly``, loaded
    by the bulk path, so that replacing stored rows takes a few set-based statements whatever
    the size. Drop it with ``drop_stage`` before the transaction ends."""
    if conn.dialect.name == "sqlite":
        # A SQLite temporary table survives a failed transaction on a pooled connection.
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{_STAGE.name}")
    _STAGE.create(conn)
    insert_usage_frame(conn, frame, _STAGE)
    if conn.dialect.name == "postgresql":
        # A temporary table has no statistics: without them the planner guesses the join badly.
        conn.exec_driver_sql(f"ANALYZE {_STAGE.name}")
    return _STAGE


def delete_staged_hours(conn: Connection, table: Table) -> int:
    """Delete the rows of ``table`` whose (resource_id, usage_hour) is staged; returns how many."""
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
    stage = stage_usage_rows(conn, frame)
    replaced = delete_staged_hours(conn, gpu_usage_hourly)
    conn.execute(gpu_usage_hourly.insert().from_select(COLUMNS, select(*(stage.c[c] for c in COLUMNS))))
    drop_stage(conn)
    return replaced
