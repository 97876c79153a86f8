"""Which version of the Heliox schema a database has, and ``heliox migrate``.

The revisions are Alembic's, in ``db/migrations`` (no alembic.ini: the configuration is built
here), recorded in the table ``heliox_schema_version`` (not ``alembic_version``, which Dagster's
own storage uses when it shares the database). A database is:

* fresh: no Heliox table at all. Writers create it at head.
* current: at the head revision, with every table and nullable column of ``schema.metadata``.
* out of date: anything else, e.g. a 0.1 database (Heliox tables, no version table). Writers and
  readers refuse it with one line; ``heliox migrate`` upgrades it in place.

``migrate`` runs the revisions (explicit ones for altered tables), then creates the tables that
are new in ``metadata`` and adds its new nullable columns (a brand-new table needs no revision).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from heliox_orchestration.db.schema import metadata
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions, sweep_default_partition

VERSION_TABLE = "heliox_schema_version"
BASELINE = "0001"  # Heliox 0.1, the schema before versioned migrations
MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key: two processes creating or migrating the schema take turns.
SCHEMA_LOCK = 0x48454C494F5A


def alembic_config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@cache
def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


@cache
def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _script().walk_revisions())


@dataclass(frozen=True)
class SchemaStatus:
    revision: str | None  # None: no version recorded
    heliox_tables: int  # Heliox tables present
    missing_tables: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        return self.revision is None and self.heliox_tables == 0

    @property
    def newer(self) -> bool:
        """Written by a newer Heliox: a revision this one does not know."""
        return self.revision is not None and self.revision not in known_revisions()

    @property
    def current(self) -> bool:
        return self.revision == head_revision() and not self.missing_tables and not self.missing_columns

    def describe(self) -> str:
        version = "0.1 (unversioned)" if self.revision is None else f"revision {self.revision}"
        gaps = [f"needs revision {head_revision()}"] if self.revision != head_revision() else []
        if self.missing_tables:
            gaps.append(f"lacks tables {', '.join(self.missing_tables[:3])}")
        if self.missing_columns:
            gaps.append(f"lacks columns {', '.join(self.missing_columns[:3])}")
        return f"schema {version}, {'; '.join(gaps) or 'current'}"


def schema_status(conn: Connection) -> SchemaStatus:
    """Read only."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    revision = None
    if VERSION_TABLE in present:
        heads = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
        revision = heads[0] if heads else None
    ours = [name for name in metadata.tables if name in present]
    missing_columns = []
    for name in ours:
        present_columns = {c["name"] for c in inspector.get_columns(name)}
        wanted = metadata.tables[name].columns
        missing_columns += [f"{name}.{c.name}" for c in wanted if c.name not in present_columns]
    return SchemaStatus(
        revision=revision,
        heliox_tables=len(ours),
        missing_tables=[name for name in metadata.tables if name not in present],
        missing_columns=missing_columns,
    )


def refusal(status: SchemaStatus, where: str) -> str:
    """The one line a command or run stops with on a database that is not current."""
    if status.newer:
        return (
            f"{where} has {status.describe()}: it was migrated by a newer Heliox (this one "
            f"knows revisions up to {head_revision()}); upgrade Heliox."
        )
    return f"{where} has {status.describe()}: run `heliox migrate` to upgrade it in place."


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})


def create_at_head(engine: Engine) -> bool:
    """Create every table of a fresh database and record the head revision, in one transaction;
    False (nothing done) when the database turned out not to be fresh."""
    with engine.begin() as conn:
        _lock(conn)
        if not schema_status(conn).fresh:
            return False
        metadata.create_all(conn)
        now = dt.datetime.now(dt.UTC)
        ensure_usage_partitions(conn, now, now)
        command.stamp(alembic_config(conn), "head")
    return True


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
        _lock(conn)
        before = schema_status(conn)
        if before.newer:
            raise RuntimeError(refusal(before, "The database"))
        if before.fresh:
            metadata.create_all(conn)
            command.stamp(alembic_config(conn), "head")
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
