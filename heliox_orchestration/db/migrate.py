"""``heliox migrate``: upgrade a database's Heliox schema in place with Alembic.

``migrate`` runs the revisions of ``db/migrations`` (no alembic.ini: the configuration is built
here), explicit ones for altered tables, then creates the tables that are new in ``metadata``
and adds its new nullable columns (a brand-new table needs no revision).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from heliox_orchestration.db.schema import metadata
from heliox_orchestration.db.schema_version import (
    BASELINE,
    SchemaStatus,
    create_head_schema,
    lock_schema,
    refusal,
    schema_status,
)
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions, sweep_default_partition

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def script_revisions() -> list[str]:
    """The revisions of the files in db/migrations/versions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


@dataclass(frozen=True)
class MigrationReport:
    before: SchemaStatus
    after: SchemaStatus
    created_tables: list[str]
    added_columns: list[str]
    partitions: list[str]

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.partitions)


def migrate(engine: Engine) -> MigrationReport:
    """Upgrade the database in place to the head revision (a fresh one is created at head), in
    one transaction on PostgreSQL. Idempotent: a current database is left as it is."""
    with engine.begin() as conn:
        lock_schema(conn)
        before = schema_status(conn)
        if before.newer:
            raise RuntimeError(refusal(before, "The database"))
        if before.fresh:
            create_head_schema(conn)
        elif before.revision is None:
            command.stamp(alembic_config(conn), BASELINE)
        config = alembic_config(conn)
        command.upgrade(config, "head")
        missing = schema_status(conn).missing_tables
        metadata.create_all(conn, tables=[metadata.tables[name] for name in missing])
        added = add_missing_nullable_columns(conn)
        now = dt.datetime.now(dt.UTC)
        partitions = ensure_usage_partitions(conn, now, now) + sweep_default_partition(conn)
        after = schema_status(conn)
    created = [] if before.fresh else missing
    return MigrationReport(before, after, created, added, partitions)


def add_missing_nullable_columns(conn: Connection) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for every nullable column of the schema that an existing
    table lacks; returns ``table.column`` of each one added. A missing NOT NULL column needs a
    revision: it cannot be added to a table with rows without a default."""
    inspector = inspect(conn)
    existing_tables = set(inspector.get_table_names())
    quote_name = conn.dialect.identifier_preparer.quote
    added = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable:
                continue
            column_type = column.type.compile(dialect=conn.dialect)
            name = f"{quote_name(table.name)} ADD COLUMN {quote_name(column.name)}"
            conn.execute(text(f"ALTER TABLE {name} {column_type}"))
            added.append(f"{table.name}.{column.name}")
    return added
