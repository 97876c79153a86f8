"""Which version of the Heliox schema a database has (read by every writer and reader).

The revisions are Alembic's, in ``db/migrations`` (``heliox migrate``: db/migrate.py), recorded
in the table ``heliox_schema_version`` (not ``alembic_version``, which Dagster's own storage uses
when it shares the database). A database is:

* fresh: no Heliox table at all. Writers create it at head (``create_at_head``).
* current: at the head revision, with every table and nullable column of ``schema.metadata``.
* out of date: anything else, e.g. a 0.1 database (Heliox tables, no version table). Writers and
  readers refuse it with one line; ``heliox migrate`` upgrades it in place.

This module does not import Alembic (the Dagster definitions load it through the database
resource); ``HEAD_REVISION`` and ``REVISIONS`` are checked against the revision files by a test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
    text,
)

from heliox_orchestration.db.schema import metadata
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions

VERSION_TABLE = "heliox_schema_version"
BASELINE = "0001"  # Heliox 0.1, the schema before versioned migrations
# Every revision in db/migrations/versions, oldest first; the last is the head.
REVISIONS = ("0001", "0002", "0003", "0004")
HEAD_REVISION = REVISIONS[-1]
# pg_advisory_xact_lock key: two processes creating or migrating the schema take turns.
SCHEMA_LOCK = 0x48454C494F5A
# The table Alembic keeps the revision in (the same DDL as Alembic's own).
version_table = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)


def head_revision() -> str:
    return HEAD_REVISION


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
        return self.revision is not None and self.revision not in REVISIONS

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
        revision = conn.execute(select(version_table.c.version_num)).scalar()
    ours = [name for name in metadata.tables if name in present]
    missing_columns = []
    columns = inspector.get_multi_columns(filter_names=ours) if ours else {}  # one query on PostgreSQL
    for (_, name), found in sorted(columns.items(), key=lambda item: ours.index(item[0][1])):
        present_columns = {c["name"] for c in found}
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


def lock_schema(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})


def create_at_head(engine: Engine) -> bool:
    """Create every table of a fresh database and record the head revision, in one transaction;
    False (nothing done) when the database turned out not to be fresh."""
    with engine.begin() as conn:
        lock_schema(conn)
        if not schema_status(conn).fresh:
            return False
        create_head_schema(conn)
    return True


def create_head_schema(conn: Connection) -> None:
    metadata.create_all(conn)
    now = dt.datetime.now(dt.UTC)
    ensure_usage_partitions(conn, now, now)
    version_table.create(conn)
    conn.execute(version_table.insert().values(version_num=HEAD_REVISION))
