"""Usage rows keyed by an integer per resource (issue 18, G2): ``gpu_resources`` (resource_key,
resource_id) and ``gpu_usage_rows`` (the columns of gpu_usage_hourly, resource_key instead of
resource_id, fixed-width columns first), read through the view ``gpu_usage_hourly``.

The rows are copied in the migration's one transaction, in time order (the BRIN index depends on
it), resources keyed in resource_id order; the old table is dropped after the copy, and the
primary key and the usage_hour index are built over the copied rows. On PostgreSQL the month
partitions keep their names (``gpu_usage_hourly_YYYY_MM``), now of ``gpu_usage_rows``.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Connection, inspect, text

from heliox_orchestration.db.schema import gpu_resources, gpu_usage_rows
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions
from heliox_orchestration.db.usage_store import ROW_COLUMNS, create_usage_view

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = "gpu_usage_hourly_v03"


def upgrade() -> None:
    conn = op.get_bind()
    if inspect(conn).has_table(gpu_usage_rows.name):
        return
    postgres = conn.dialect.name == "postgresql"
    conn.execute(text(f"ALTER TABLE gpu_usage_hourly RENAME TO {OLD}"))
    if postgres:
        _set_aside_old_partitions(conn)
    else:
        conn.execute(text("DROP INDEX IF EXISTS ix_gpu_usage_hourly_usage_hour"))
    gpu_resources.create(conn)
    gpu_usage_rows.create(conn)
    # Built once over the copied rows (sorted, compact), not row by row during the copy.
    for index in gpu_usage_rows.indexes:
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    if postgres:
        conn.execute(text("ALTER TABLE gpu_usage_rows DROP CONSTRAINT pk_gpu_usage_rows"))
    conn.execute(
        text(
            f"INSERT INTO gpu_resources (resource_id) SELECT DISTINCT resource_id FROM {OLD} "
            "ORDER BY resource_id"
        )
    )
    first, last = conn.execute(text(f"SELECT min(usage_hour), max(usage_hour) FROM {OLD}")).one()
    if postgres and first is not None:
        ensure_usage_partitions(conn, first, last)
    selected = ", ".join("r.resource_key" if c == "resource_key" else f"u.{c}" for c in ROW_COLUMNS)
    copy = (
        f"INSERT INTO gpu_usage_rows ({', '.join(ROW_COLUMNS)}) SELECT {selected} FROM {OLD} u "
        "JOIN gpu_resources r ON r.resource_id = u.resource_id ORDER BY u.usage_hour"
    )
    if postgres:
        conn.execute(text(copy))
    else:
        # A table created before the CHECK constraints may hold rows they refuse: they are kept
        # as they were (costs/quality.py's rules still find them), not lost to the upgrade.
        conn.execute(text("PRAGMA ignore_check_constraints = ON"))
        conn.execute(text(copy))
        conn.execute(text("PRAGMA ignore_check_constraints = OFF"))
    conn.execute(text(f"DROP TABLE {OLD}"))
    if postgres:
        key = "ADD CONSTRAINT pk_gpu_usage_rows PRIMARY KEY (resource_key, usage_hour)"
        conn.execute(text(f"ALTER TABLE gpu_usage_rows {key}"))
    for index in gpu_usage_rows.indexes:
        index.create(conn)
    create_usage_view(conn)


def _set_aside_old_partitions(conn: Connection) -> None:
    """The old partitions hold the names the new ones get, and their indexes are not needed for
    the copy: rename them, drop the indexes."""
    children = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"WHERE i.inhparent = to_regclass('{OLD}')"
        )
    ).scalars()
    for name in list(children):
        conn.execute(text(f'ALTER TABLE "{name}" RENAME TO "{name[:55]}_v03"'))
    conn.execute(text(f"ALTER TABLE {OLD} DROP CONSTRAINT IF EXISTS pk_gpu_usage_hourly"))
    conn.execute(text("DROP INDEX IF EXISTS brin_gpu_usage_hourly_usage_hour"))
