"""Test databases in PostgreSQL at the head schema, reused from one test to the next.

Creating a database from a template takes ~0.2 s, but dropping one forces a checkpoint of the
whole server (PostgreSQL 15): ~1-2 s each on a busy machine, for the hundreds of databases a run
uses. So after a test its database goes back to the pool, emptied (``TRUNCATE``, identities
restarted, the planner's statistics and size estimates as in the template), when its schema is
still exactly the template's: the same tables, partitions, columns, constraints, indexes,
privileges and recorded revision. A test that changed any of that (a migration, a new month
partition, a role's grant) leaves its database out of the pool; it is dropped at the end of the
session with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from heliox_orchestration.db.schema_version import VERSION_TABLE

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
# Everything a test could change besides rows, by name and definition (never by oid).
FINGERPRINT = text(
    f"""
SELECT string_agg(item, E'\\n' ORDER BY item) FROM (
  SELECT 'rel ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' '
         || coalesce(pg_get_expr(c.relpartbound, c.oid), '') || ' ' || coalesce(c.relacl::text, '')
         || ' ' || coalesce(c.reloptions::text, '') AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
         || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
         || coalesce(a.attacl::text, '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMAS}
  UNION ALL
  SELECT 'con ' || c.relname || ' ' || o.conname || ' ' || pg_get_constraintdef(o.oid)
    FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT 'ns ' || n.nspname || ' ' || coalesce(n.nspacl::text, '') FROM pg_namespace n
  UNION ALL
  SELECT 'fn ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE {USER_SCHEMAS}
  UNION ALL
  SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'rule ' || rulename FROM pg_rules WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT 'statistics ' || stxname FROM pg_statistic_ext
  UNION ALL
  SELECT 'extension ' || extname FROM pg_extension
  UNION ALL
  SELECT 'setting ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'revision ' || version_num FROM "{VERSION_TABLE}"
  UNION ALL
  SELECT 'prepared ' || gid FROM pg_prepared_xacts WHERE database = current_database()
) items
"""
)
TABLES = text(
    f"""
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> :version AND {USER_SCHEMAS}
ORDER BY 1
"""
)


# The planner's size estimates of every relation (the ones TRUNCATE does not reset: partitioned
# parents, the revision table), restored to the template's after each test.
SIZES = text(
    f"""
SELECT n.nspname, c.relname, c.relpages, c.reltuples, c.relallvisible
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'i', 'I') AND {USER_SCHEMAS}
"""
)
RESTORE_SIZE = text(
    "UPDATE pg_class c SET relpages = :relpages, reltuples = :reltuples, relallvisible = :relallvisible "
    "FROM pg_namespace n WHERE n.oid = c.relnamespace AND n.nspname = :nspname AND c.relname = :relname "
    "AND (c.relpages, c.reltuples, c.relallvisible) IS DISTINCT FROM (:relpages, :reltuples, :relallvisible)"
)


def _fingerprint(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(FINGERPRINT).scalar_one())


def sizes(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(SIZES).mappings()]


class PostgresPool:
    """Databases copied from ``template`` (at the head schema), handed out one per test."""

    def __init__(self, admin: Engine, create: Callable[..., str], template_url: str) -> None:
        self.admin = admin
        self.create = create
        self.template = str(make_url(template_url).database)
        engine = create_engine(template_url, poolclass=NullPool)
        self.fingerprint = _fingerprint(engine)
        self.sizes = sizes(engine)
        engine.dispose()
        self.free: list[str] = []

    def acquire(self) -> str:
        if self.free:
            return self.free.pop()
        return self.create("heliox_test", template=self.template)

    def release(self, url: str) -> None:
        """Back to the pool, emptied, if its schema is still the template's; else left to be dropped."""
        name = make_url(url).database
        with self.admin.connect() as conn:  # connections the test left open (its own engines)
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        engine = create_engine(url, poolclass=NullPool)
        try:
            if _fingerprint(engine) != self.fingerprint:
                return
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                tables = conn.execute(TABLES, {"version": VERSION_TABLE}).scalars().all()
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                # The planner's statistics of the rows just removed (ANALYZE, autovacuum).
                conn.execute(
                    text(
                        "DELETE FROM pg_statistic WHERE starelid IN (SELECT c.oid FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        f"WHERE {USER_SCHEMAS})"
                    )
                )
                conn.execute(RESTORE_SIZE, self.sizes)
        except SQLAlchemyError:
            return  # a lock still held, no right to pg_statistic: dropped at the end instead
        finally:
            engine.dispose()
        self.free.append(url)
