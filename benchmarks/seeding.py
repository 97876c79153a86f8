"""The benchmark databases: created on the server if missing, seeded once with the demo fleet
(``seed_demo``), recognised afterwards by a marker table so that later runs reuse them.

A database is only (re)seeded when it is empty or carries the benchmark's marker: the benchmark
never truncates a database it did not fill itself.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from heliox_orchestration.db.engine import make_engine, mask_url
from heliox_orchestration.db.migrate import migrate
from heliox_orchestration.db.schema import gpu_usage_rows, metadata
from heliox_orchestration.db.usage_partitions import month_partitions
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo

MARKER_TABLE = "heliox_benchmark_fleet"
_marker_metadata = MetaData()
marker = Table(
    MARKER_TABLE,
    _marker_metadata,
    Column("gpus", Integer, nullable=False),
    Column("days", Integer, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("usage_rows", Integer, nullable=False),
    Column("seed_seconds", Float, nullable=False),
    Column("seeded_at", String(40), nullable=False),
    Column("indexes", Text, nullable=True, comment="index_fingerprint() the indexes were built with"),
)
USAGE_PK = "pk_gpu_usage_rows"


class NotABenchmarkDatabase(RuntimeError):
    """The database holds usage rows the benchmark did not write; it refuses to replace them."""


@dataclass(frozen=True)
class Prepared:
    url: str
    spec: FleetSpec
    rows: int
    reused: bool
    seed_seconds: float  # of this run, or of the run that seeded the reused database
    table_mb: float
    index_mb: float


def index_fingerprint() -> str:
    """The DDL of the usage table's indexes in the schema: a reused database whose indexes were
    built from another schema version gets them rebuilt (the rows stay)."""
    dialect = postgresql.dialect()
    ddl = [f"PRIMARY KEY ({', '.join(c.name for c in gpu_usage_rows.primary_key.columns)})"]
    ddl += sorted(str(CreateIndex(index).compile(dialect=dialect)) for index in gpu_usage_rows.indexes)
    return "; ".join(ddl)


def seed_instant(spec: FleetSpec) -> dt.datetime:
    """The fixed "now" of seeding: just after the end date, so every hour of it is complete."""
    assert spec.end_date is not None
    return dt.datetime.combine(spec.end_date + dt.timedelta(days=1), dt.time(), dt.UTC)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def create_database_if_missing(url: str) -> bool:
    """Create the URL's database through the server's ``postgres`` database; True if created."""
    name = make_url(url).database
    admin = create_engine(with_database(url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists:
                return False
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(with_database(url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _recorded_fleet(engine: Engine, spec: FleetSpec) -> Any:
    """The marker row when it records the requested fleet and the rows are still all there."""
    if not inspect(engine).has_table(MARKER_TABLE):
        return None
    with engine.begin() as conn:
        # Markers written before the index fingerprint existed lack its column.
        conn.execute(text(f"ALTER TABLE {MARKER_TABLE} ADD COLUMN IF NOT EXISTS indexes TEXT"))
        row = conn.execute(select(marker)).first()
        if row is None or (row.gpus, row.days, row.end_date, row.seed, row.timezone) != (
            spec.gpus,
            spec.days,
            spec.end_date,
            spec.seed,
            spec.timezone,
        ):
            return None
        # The marker is written last, after the indexes: count to catch rows changed since.
        count = conn.execute(text("SELECT count(*) FROM gpu_usage_rows")).scalar_one()
    return row if count == row.usage_rows else None


def usage_sizes(engine: Engine) -> tuple[int, int]:
    """Bytes of the usage table (every partition, TOAST and maps included, and the resource
    table its rows refer to) and of all their indexes."""
    with engine.connect() as conn:
        table, indexes = conn.execute(
            text(
                "SELECT coalesce(sum(pg_table_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0) "
                "FROM (SELECT relid FROM pg_partition_tree('gpu_usage_rows') "
                "UNION ALL SELECT 'gpu_resources'::regclass) t"
            )
        ).one()
    return int(table), int(indexes)


def _sizes(engine: Engine) -> tuple[float, float]:
    table, indexes = usage_sizes(engine)
    return table / 2**20, indexes / 2**20


def prepare_database(url: str, spec: FleetSpec, log: Callable[[str], None] = print) -> Prepared:
    """The database of ``spec``: reused when its marker matches, else seeded from scratch."""
    create_database_if_missing(url)
    engine = make_engine(url)
    try:
        # A database seeded by an older Heliox is upgraded in place, as `heliox migrate` does.
        migrated = migrate(engine)
        if migrated.changed and not migrated.before.fresh:
            was = migrated.before.describe()
            log(f"migrated {mask_url(url)}: {was} -> revision {migrated.after.revision}")
        found = _recorded_fleet(engine, spec)
        if found is not None:
            if found.indexes != index_fingerprint():
                log(f"rebuilding the usage indexes of {mask_url(url)} (the schema's have changed)")
                _build_indexes(engine)
                with engine.begin() as conn:
                    conn.execute(marker.update().values(indexes=index_fingerprint()))
            log(
                f"reusing {mask_url(url)}: {found.usage_rows:,} rows of {spec.gpus:,} GPUs x {spec.days} days"
            )
            return Prepared(url, spec, found.usage_rows, True, found.seed_seconds, *_sizes(engine))
        started = time.perf_counter()
        rows = _reseed(engine, spec, log)
        seconds = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(marker.delete())
            conn.execute(
                marker.insert().values(
                    gpus=spec.gpus,
                    days=spec.days,
                    end_date=spec.end_date,
                    seed=spec.seed,
                    timezone=spec.timezone,
                    usage_rows=rows,
                    seed_seconds=seconds,
                    seeded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    indexes=index_fingerprint(),
                )
            )
        log(f"seeded {mask_url(url)}: {rows:,} rows in {seconds:.0f} s")
        return Prepared(url, spec, rows, False, seconds, *_sizes(engine))
    finally:
        engine.dispose()


def _reseed(engine: Engine, spec: FleetSpec, log: Callable[[str], None]) -> int:
    ours = inspect(engine).has_table(MARKER_TABLE)
    with engine.connect() as conn:
        has_rows = conn.execute(select(gpu_usage_rows.c.resource_key).limit(1)).first() is not None
    if has_rows and not ours:
        raise NotABenchmarkDatabase(
            f"{mask_url(engine.url)} already holds usage rows that the benchmark did not write; "
            "give the benchmark an empty database (or one it seeded before)."
        )
    _marker_metadata.create_all(engine)
    derived = [t.name for t in metadata.sorted_tables]
    with engine.begin() as conn:
        # Everything here was written by the benchmark (or is empty): start from nothing.
        conn.execute(text(f"TRUNCATE {', '.join([*derived, MARKER_TABLE])} RESTART IDENTITY"))
        _drop_indexes(conn)  # bulk load first, then build the indexes once (sorted, compact)
    log(f"seeding {mask_url(engine.url)}: {spec.gpus:,} GPUs x {spec.days} days ending {spec.end_date}")
    step = max(1, spec.gpus * spec.days * 24 // 10)
    done = [0, 0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] - done[1] >= step:
            done[1] = done[0]
            log(f"  {done[0]:,} rows")

    report = seed_demo(engine, spec, now=seed_instant(spec), progress=progress)
    log(f"  {report.rows:,} rows written; ordering them by hour, as they arrive in production")
    _order_by_time(engine)
    log("  building indexes")
    _build_indexes(engine)
    return report.rows


def _order_by_time(engine: Engine) -> None:
    """The generator writes a block of GPUs at a time, over all their hours; production rows
    arrive hour by hour (exports, telemetry), which is what the BRIN index on usage_hour relies
    on. Rewrite each month partition in time order (before the indexes are built)."""
    with engine.begin() as conn:
        for month in month_partitions(conn):
            conn.execute(
                text(
                    f"CREATE TEMPORARY TABLE heliox_sorted AS SELECT * FROM {month.name} ORDER BY usage_hour"
                )
            )
            conn.execute(text(f"TRUNCATE {month.name}"))
            conn.execute(text(f"INSERT INTO {month.name} SELECT * FROM heliox_sorted"))
            conn.execute(text("DROP TABLE heliox_sorted"))


def _drop_indexes(conn: Connection) -> None:
    names = conn.execute(
        text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'gpu_usage_rows' "
            "AND schemaname = current_schema() AND indexname <> :pk"
        ),
        {"pk": USAGE_PK},
    ).scalars()
    for name in list(names):
        conn.execute(text(f'DROP INDEX "{name}"'))
    conn.execute(text(f"ALTER TABLE gpu_usage_rows DROP CONSTRAINT IF EXISTS {USAGE_PK}"))


def _build_indexes(engine: Engine) -> None:
    """The primary key and the schema's indexes of the usage table, built from scratch; then
    VACUUM (ANALYZE): planner statistics, the visibility map that index-only scans rely on, and
    hint bits set once rather than by the first measured query."""
    with engine.begin() as conn:
        _drop_indexes(conn)
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        key = ", ".join(c.name for c in gpu_usage_rows.primary_key.columns)
        conn.execute(text(f"ALTER TABLE gpu_usage_rows ADD CONSTRAINT {USAGE_PK} PRIMARY KEY ({key})"))
        for index in gpu_usage_rows.indexes:
            index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) gpu_usage_rows, gpu_resources"))
