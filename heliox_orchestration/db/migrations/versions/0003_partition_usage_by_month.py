"""PostgreSQL: gpu_usage_hourly partitioned by month, a BRIN index on usage_hour instead of the
covering B-tree. SQLite keeps its plain table (nothing to do).

The rows are copied into the partitioned table in the migration's one transaction, in time order
(the BRIN index depends on it); the 0.1 table and its indexes are dropped after the copy, and the
primary key and the BRIN index are built over the copied rows. Since revision 0004 (which copies
the rows again, into ``gpu_usage_rows``) the copy goes to the default partition: the month
partitions are 0004's.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD = "gpu_usage_hourly_v01"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass('gpu_usage_hourly')"))
    if kind.scalar() != "r":
        return
    for statement in (
        f"ALTER TABLE gpu_usage_hourly RENAME TO {OLD}",
        f"ALTER TABLE {OLD} RENAME CONSTRAINT pk_gpu_usage_hourly TO pk_{OLD}",
        "DROP INDEX IF EXISTS ix_gpu_usage_hourly_usage_hour",
        f"CREATE TABLE gpu_usage_hourly (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        "INCLUDING COMMENTS) PARTITION BY RANGE (usage_hour)",
        "COMMENT ON TABLE gpu_usage_hourly IS 'One row per GPU resource per hour.'",
        "CREATE TABLE gpu_usage_hourly_default PARTITION OF gpu_usage_hourly DEFAULT",
    ):
        conn.execute(text(statement))
    conn.execute(text(f"INSERT INTO gpu_usage_hourly SELECT * FROM {OLD} ORDER BY usage_hour"))
    conn.execute(text(f"DROP TABLE {OLD}"))
    # Built once over the copied rows (sorted, compact), not row by row during the copy.
    conn.execute(
        text(
            "ALTER TABLE gpu_usage_hourly ADD CONSTRAINT pk_gpu_usage_hourly "
            "PRIMARY KEY (resource_id, usage_hour)"
        )
    )
    conn.execute(
        text("CREATE INDEX brin_gpu_usage_hourly_usage_hour ON gpu_usage_hourly USING brin (usage_hour)")
    )
