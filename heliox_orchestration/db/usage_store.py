"""How hourly usage is stored: ``gpu_usage_rows`` keyed by ``gpu_resources.resource_key``, read
through the view ``gpu_usage_hourly`` (the columns of 0.1, ``resource_id`` by a join).

Readers select from the view and never see the key. The view is a LEFT JOIN on the resource's
primary key, so on PostgreSQL a query that does not name ``resource_id`` (the day query) reads
``gpu_usage_rows`` alone: the planner drops such a join (SQLite keeps it, a rowid lookup a
row). Heliox's writers write ``gpu_usage_rows`` directly, registering new resources first in
the same transaction (``resource_keys``, ``insert_usage_from``); INSTEAD OF triggers on the
view keep INSERT, UPDATE and DELETE on ``gpu_usage_hourly`` working for everything else (SQL by
hand, other tools), one row at a time. On SQLite a statement on the view reports 0 rows changed
(SQLite does not count rows its triggers change).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    Connection,
    FromClause,
    Select,
    and_,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from heliox_orchestration.db.schema import gpu_resources, gpu_usage_hourly, gpu_usage_rows, metadata

VIEW = gpu_usage_hourly.name
VIEW_COLUMNS = [c.name for c in gpu_usage_hourly.columns]
ROW_COLUMNS = [c.name for c in gpu_usage_rows.columns]
_KEY_OF = "(SELECT resource_key FROM gpu_resources WHERE resource_id = {}.resource_id)"
_SQLITE_CHUNK = 500

VIEW_SQL = (
    f"CREATE VIEW {VIEW} AS SELECT "
    + ", ".join("r.resource_id" if c == "resource_id" else f"u.{c}" for c in VIEW_COLUMNS)
    + " FROM gpu_usage_rows u LEFT JOIN gpu_resources r ON r.resource_key = u.resource_key"
)


def _sqlite_triggers() -> list[str]:
    columns = ", ".join(ROW_COLUMNS)
    new_values = ", ".join(_KEY_OF.format("NEW") if c == "resource_key" else f"NEW.{c}" for c in ROW_COLUMNS)
    assignments = ", ".join(
        f"resource_key = {_KEY_OF.format('NEW')}" if c == "resource_key" else f"{c} = NEW.{c}"
        for c in ROW_COLUMNS
    )
    old_row = f"resource_key = {_KEY_OF.format('OLD')} AND usage_hour = OLD.usage_hour"
    register = "INSERT OR IGNORE INTO gpu_resources (resource_id) VALUES (NEW.resource_id);"
    return [
        f"CREATE TRIGGER {VIEW}_insert INSTEAD OF INSERT ON {VIEW} BEGIN {register} "
        f"INSERT INTO gpu_usage_rows ({columns}) VALUES ({new_values}); END",
        f"CREATE TRIGGER {VIEW}_update INSTEAD OF UPDATE ON {VIEW} BEGIN {register} "
        f"UPDATE gpu_usage_rows SET {assignments} WHERE {old_row}; END",
        f"CREATE TRIGGER {VIEW}_delete INSTEAD OF DELETE ON {VIEW} BEGIN "
        f"DELETE FROM gpu_usage_rows WHERE {old_row}; END",
    ]


def _postgres_trigger() -> list[str]:
    columns = ", ".join(ROW_COLUMNS)
    new_values = ", ".join("k" if c == "resource_key" else f"NEW.{c}" for c in ROW_COLUMNS)
    assignments = ", ".join(
        "resource_key = k" if c == "resource_key" else f"{c} = NEW.{c}" for c in ROW_COLUMNS
    )
    old_row = f"resource_key = {_KEY_OF.format('OLD')} AND usage_hour = OLD.usage_hour"
    function = f"""CREATE OR REPLACE FUNCTION {VIEW}_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE k integer;
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO gpu_resources (resource_id) VALUES (NEW.resource_id) ON CONFLICT (resource_id) DO NOTHING;
    SELECT resource_key INTO k FROM gpu_resources WHERE resource_id = NEW.resource_id;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO gpu_usage_rows ({columns}) VALUES ({new_values});
    RETURN NEW;
  ELSIF TG_OP = 'UPDATE' THEN
    UPDATE gpu_usage_rows SET {assignments} WHERE {old_row};
    RETURN NEW;
  END IF;
  DELETE FROM gpu_usage_rows WHERE {old_row};
  RETURN OLD;
END $$"""
    trigger = (
        f"CREATE TRIGGER {VIEW}_write INSTEAD OF INSERT OR UPDATE OR DELETE ON {VIEW} "
        f"FOR EACH ROW EXECUTE FUNCTION {VIEW}_write()"
    )
    return [function, trigger]


def create_usage_view(conn: Connection) -> None:
    """The view and its triggers, unless the view (or a 0.1 table of that name) exists."""
    inspector = inspect(conn)
    names = set(inspector.get_table_names())
    if VIEW in names or VIEW in inspector.get_view_names():
        return
    if not {gpu_usage_rows.name, gpu_resources.name} <= names:
        return
    statements = _postgres_trigger() if conn.dialect.name == "postgresql" else _sqlite_triggers()
    for statement in [VIEW_SQL, *statements]:
        conn.exec_driver_sql(statement)


def drop_usage_view(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP VIEW IF EXISTS {VIEW}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {VIEW}_write()")


@event.listens_for(metadata, "after_create")
def _after_create(_target: Any, connection: Connection, **_kw: Any) -> None:
    create_usage_view(connection)


@event.listens_for(metadata, "before_drop")
def _before_drop(_target: Any, connection: Connection, **_kw: Any) -> None:
    drop_usage_view(connection)


# --- writers ---------------------------------------------------------------------------------


def register_resources(conn: Connection, resource_ids: Select[Any]) -> None:
    """Add the resources of a one-column select that ``gpu_resources`` lacks (keys in id order)."""
    ids = resource_ids.subquery()
    source = select(ids.c[0]).distinct().order_by(ids.c[0])
    if conn.dialect.name == "postgresql":
        statement: Any = pg_insert(gpu_resources).from_select(["resource_id"], source)
        conn.execute(statement.on_conflict_do_nothing(index_elements=["resource_id"]))
    else:
        conn.execute(gpu_resources.insert().prefix_with("OR IGNORE").from_select(["resource_id"], source))


def resource_keys(conn: Connection, resource_ids: Sequence[str]) -> dict[str, int]:
    """The key of each resource id, registering the new ones."""
    wanted = sorted(set(resource_ids))
    if not wanted:
        return {}
    r = gpu_resources.c
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "INSERT INTO gpu_resources (resource_id) SELECT unnest(CAST(:ids AS varchar[])) "
                "ON CONFLICT (resource_id) DO NOTHING"
            ),
            {"ids": wanted},
        )
        found = conn.execute(
            text("SELECT resource_id, resource_key FROM gpu_resources WHERE resource_id = ANY(:ids)"),
            {"ids": wanted},
        )
        return {rid: key for rid, key in found}
    keys: dict[str, int] = {}
    for first in range(0, len(wanted), _SQLITE_CHUNK):
        chunk = wanted[first : first + _SQLITE_CHUNK]
        new = [{"resource_id": rid} for rid in chunk]
        conn.execute(sqlite_insert(gpu_resources).on_conflict_do_nothing(), new)
        found = conn.execute(select(r.resource_id, r.resource_key).where(r.resource_id.in_(chunk)))
        keys.update({rid: key for rid, key in found})
    return keys


def insert_usage_from(conn: Connection, source: FromClause, *where: Any) -> int:
    """Insert the rows of ``source`` (a table or subquery with the view's columns) that match
    ``where`` into ``gpu_usage_rows``; returns how many."""
    register_resources(conn, select(source.c.resource_id).where(*where))
    r = gpu_resources.c
    rows = select(*(r.resource_key if c == "resource_key" else source.c[c] for c in ROW_COLUMNS)).join_from(
        source, gpu_resources, r.resource_id == source.c.resource_id
    )
    return conn.execute(gpu_usage_rows.insert().from_select(ROW_COLUMNS, rows.where(*where))).rowcount or 0


def delete_usage_from(conn: Connection, source: FromClause, *where: Any) -> int:
    """Delete the stored rows of the (resource_id, usage_hour) of ``source``'s rows matching
    ``where``; returns how many."""
    r, u = gpu_resources.c, gpu_usage_rows.c
    keys = select(r.resource_key, source.c.usage_hour).join_from(
        source, gpu_resources, r.resource_id == source.c.resource_id
    )
    staged = tuple_(u.resource_key, u.usage_hour).in_(keys.where(*where))
    return conn.execute(delete(gpu_usage_rows).where(staged)).rowcount or 0


def keys_of_resources(*where: Any) -> Select[Any]:
    """``resource_key``s of the resources matching ``where`` (on ``gpu_resources.c``), for
    writers that filter ``gpu_usage_rows`` by resource id."""
    return select(gpu_resources.c.resource_key).where(*where)


# Where ``newest_usage_hour_before`` looks, nearest first: each a range ending at ``end``.
NEWEST_HOUR_SPANS = (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=8), dt.timedelta(days=40))


def newest_usage_hour_before(
    conn: Connection, end: dt.datetime, *, inclusive: bool = False
) -> dt.datetime | None:
    """The newest ``usage_hour`` before ``end`` (or at it, ``inclusive``), from the nearest range
    that has a row: the last hour, then the last day, 8 days, 40 days, then everything earlier.
    A max over every hour before ``end`` would read the whole history on PostgreSQL, whose only
    index on usage_hour is a BRIN (no order); a bounded range reads only its block ranges."""
    u = gpu_usage_hourly.c
    upper = u.usage_hour <= end if inclusive else u.usage_hour < end
    for span in NEWEST_HOUR_SPANS:
        in_span = and_(u.usage_hour >= end - span, upper)
        newest = conn.execute(select(func.max(u.usage_hour)).where(in_span)).scalar_one()
        if newest is not None:
            return cast(dt.datetime, newest)
    earlier = u.usage_hour < end - NEWEST_HOUR_SPANS[-1]
    return cast(dt.datetime | None, conn.execute(select(func.max(u.usage_hour)).where(earlier)).scalar_one())
