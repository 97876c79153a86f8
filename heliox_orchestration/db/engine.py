"""Opening the Heliox database: URL parsing, masking, schema creation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, inspect, make_url, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from heliox_orchestration.db.schema import gpu_usage_hourly, metadata
from heliox_orchestration.settings import DATABASE_URL_VAR


class DatabaseConfigError(RuntimeError):
    """The Heliox database URL is unusable. The message never contains the password."""


def embedded_database_url(path: Path) -> str:
    return f"sqlite:///{path}"


def mask_url(url: str | URL) -> str:
    """The URL with its password hidden, safe for logs and errors."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the Dagster UI read while a run writes; busy_timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    # No JIT: Heliox's aggregates run in well under a few seconds, where compiling costs more
    # (0.1-0.9 s) than it saves; and PostgreSQL decides on JIT from the planner's cost estimate,
    # which grows with the table's history, so the same day would get slower as history grows.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET jit = off")
    cursor.close()
    dbapi_connection.commit()  # a rolled-back SET is undone


def make_engine(url: str, *, variable: str = DATABASE_URL_VAR) -> Engine:
    """Create an engine, or raise DatabaseConfigError naming ``variable`` and the masked URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseConfigError(
            f"{variable} cannot be parsed as a database URL; expected e.g. "
            "'postgresql+psycopg2://user:password@host:5432/heliox' or 'sqlite:///path/heliox.db'."
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseConfigError(
            f"{variable}={mask_url(parsed)} names a database driver that is not installed "
            f"({type(exc).__name__}); use postgresql+psycopg2:// or sqlite:///."
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_session)
    return engine


def ensure_schema(engine: Engine, *, variable: str = DATABASE_URL_VAR) -> None:
    """Create missing Heliox tables, and add the nullable columns a newer Heliox added to an
    existing table. Never drops, renames or retypes anything."""
    try:
        metadata.create_all(engine, checkfirst=True)
        add_missing_nullable_columns(engine)
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(
            f"{variable}={mask_url(engine.url)} cannot be reached or used: {_first_line(exc)}"
        ) from None


def add_missing_nullable_columns(engine: Engine) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for every nullable column of the schema that an existing
    table lacks; returns ``table.column`` of each one added. A missing NOT NULL column is left to
    a migration: it cannot be added to a table with rows without a default."""
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    quote = engine.dialect.identifier_preparer.quote
    added = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if table.name not in existing_tables:
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                column_type = column.type.compile(dialect=engine.dialect)
                conn.execute(
                    text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column_type}")
                )
                added.append(f"{table.name}.{column.name}")
    return added


def table_row_counts(engine: Engine) -> dict[str, int | None]:
    """Row count of every Heliox table; None for a table that does not exist yet."""
    counts: dict[str, int | None] = {}
    try:
        existing = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            for name, table in metadata.tables.items():
                counts[name] = (
                    conn.execute(select(func.count()).select_from(table)).scalar_one()
                    if name in existing
                    else None
                )
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(
            f"{DATABASE_URL_VAR}={mask_url(engine.url)} cannot be reached: {_first_line(exc)}"
        ) from None
    return counts


def usage_is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(gpu_usage_hourly.c.resource_id).limit(1)).first() is None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
