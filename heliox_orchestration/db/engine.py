"""Opening the Heliox database: URL parsing, masking, the schema check of every writer."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, func, inspect, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_rows, metadata
from heliox_orchestration.db.schema_version import (
    SchemaStatus,
    create_at_head,
    refusal,
    schema_status,
)
from heliox_orchestration.secrets import mask_database_url, redact_database_url
from heliox_orchestration.settings import DATABASE_URL_VAR


class DatabaseConfigError(RuntimeError):
    """The Heliox database URL is unusable. The message never contains the password."""


def embedded_database_url(path: Path) -> str:
    return f"sqlite:///{path}"


def mask_url(url: str | URL) -> str:
    """The URL with every credential hidden (``secrets.mask_database_url``), safe to show."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return mask_database_url(text)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the Dagster UI read while a run writes; busy_timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # A read-only connection cannot change the journal mode; it reads WAL databases as they are.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    # No JIT: Heliox's aggregates run in well under a few seconds, where compiling costs more
    # (0.1-0.9 s) than it saves; and PostgreSQL decides on JIT from the planner's cost estimate,
    # which grows with the table's history, so the same day would get slower as history grows.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET jit = off")
    cursor.close()
    dbapi_connection.commit()  # a rolled-back SET is undone


def _parse(url: str, variable: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseConfigError(
            f"{variable} cannot be parsed as a database URL; expected e.g. "
            "'postgresql+psycopg2://user:password@host:5432/heliox' or 'sqlite:///path/heliox.db'."
        ) from None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _prepare_sqlite_folder(path: Path, variable: str) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseConfigError(
            f"{variable}: cannot create the folder {folder} for the SQLite database "
            f"({exc.strerror or type(exc).__name__}); point {variable} or HELIOX_DATA_DIR at a "
            "writable folder."
        ) from None
    if path.is_dir():
        raise DatabaseConfigError(
            f"{variable}: {path} is a folder, not a SQLite database file; name a file, "
            "e.g. sqlite:///data/heliox.db."
        )


def make_engine(url: str, *, variable: str = DATABASE_URL_VAR, read_only: bool = False) -> Engine:
    """Create an engine, or raise DatabaseConfigError naming ``variable`` and the masked URL.

    ``read_only`` opens a SQLite file without creating it or its folder and without writing to
    it (commands that only read must work on a read-only file); on PostgreSQL the role's own
    rights apply and nothing is created."""
    parsed = _parse(url, variable)
    path = sqlite_path(url)
    if path is not None and read_only:
        if not path.is_file():
            raise DatabaseConfigError(
                f"{variable}: the SQLite database {path} does not exist yet; it is created by the "
                "first Dagster run (`make run`), `heliox seed-demo` or `heliox import-focus`."
            )
        return _read_only_sqlite_engine(path.resolve())
    if path is not None:
        _prepare_sqlite_folder(path, variable)
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseConfigError(
            f"{variable}={mask_url(url)} names a database driver that is not installed "
            f"({type(exc).__name__}); use postgresql+psycopg2:// or sqlite:///."
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_read_only_pragmas if read_only else _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_session)
    return engine


def _read_only_sqlite_connection(path: Path) -> sqlite3.Connection:
    """A connection that never writes. A WAL database needs its shared-memory file to be read
    even read-only; where it cannot be created (a read-only folder), the file is opened as
    immutable, which is what it is to this user."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    return sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True, check_same_thread=False)


def _read_only_sqlite_engine(path: Path) -> Engine:
    engine = create_engine("sqlite://", creator=lambda: _read_only_sqlite_connection(path))
    event.listen(engine, "connect", _sqlite_read_only_pragmas)
    return engine


def _unreachable(engine: Engine, variable: str, exc: BaseException, what: str = "cannot be reached") -> str:
    url = engine.url.render_as_string(hide_password=False)
    return redact_database_url(f"{variable}={mask_url(url)} {what}: {_first_line(exc)}", url)


def ensure_schema(engine: Engine, *, variable: str = DATABASE_URL_VAR) -> None:
    """What every writer does before writing: a fresh database is created at the head revision;
    one whose schema is out of date is refused with one line ("run `heliox migrate`"). Never
    alters an existing table (``heliox migrate`` does, see db/migrate.py)."""
    try:
        with engine.connect() as conn:
            status = schema_status(conn)
        if status.fresh:
            if create_at_head(engine):
                return
            with engine.connect() as conn:  # another process created it meanwhile
                status = schema_status(conn)
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(_unreachable(engine, variable, exc, "cannot be reached or used")) from None
    check_schema_status(engine, status, variable)


def check_schema_status(engine: Engine, status: SchemaStatus, variable: str = DATABASE_URL_VAR) -> None:
    if not status.current:
        url = engine.url.render_as_string(hide_password=False)
        raise DatabaseConfigError(refusal(status, f"{variable}={mask_url(url)}"))


def read_schema_status(engine: Engine, *, variable: str = DATABASE_URL_VAR) -> SchemaStatus:
    try:
        with engine.connect() as conn:
            return schema_status(conn)
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(_unreachable(engine, variable, exc)) from None


def missing_tables(engine: Engine, *, variable: str = DATABASE_URL_VAR) -> list[str]:
    """Heliox tables the database does not have (read only)."""
    try:
        existing = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(_unreachable(engine, variable, exc)) from None
    return [name for name in metadata.tables if name not in existing]


def listed_name(table: str) -> str:
    """The name a table is shown by: the usage rows by their view's (what readers query)."""
    return gpu_usage_hourly.name if table == gpu_usage_rows.name else table


def table_row_counts(engine: Engine, *, variable: str = DATABASE_URL_VAR) -> dict[str, int | None]:
    """Row count of every Heliox table; None for a table that does not exist yet."""
    counts: dict[str, int | None] = {}
    absent = set(missing_tables(engine, variable=variable))
    try:
        with engine.connect() as conn:
            for name, table in metadata.tables.items():
                counts[listed_name(name)] = (
                    None
                    if name in absent
                    else conn.execute(select(func.count()).select_from(table)).scalar_one()
                )
    except SQLAlchemyError as exc:
        raise DatabaseConfigError(_unreachable(engine, variable, exc)) from None
    return counts


def usage_is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(gpu_usage_hourly.c.resource_id).limit(1)).first() is None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_URL_SCHEME = re.compile(r"(?P<backend>[A-Za-z][\w]*)(?:\+\w+)?://")


def database_url_problem(url: str, variable: str = DATABASE_URL_VAR) -> str | None:
    """Why ``HELIOX_DATABASE_URL`` cannot be used, without quoting it (it may hold a password)."""
    match = _URL_SCHEME.match(url)
    if match is None:
        return (
            f"{variable} cannot be parsed as a database URL; expected e.g. "
            "'postgresql+psycopg2://user:password@host:5432/heliox' or 'sqlite:///path/heliox.db'."
        )
    backend = match["backend"].lower()
    if backend not in ("postgresql", "sqlite"):
        return (
            f"{variable} names a {backend} database driver, which Heliox does not support; "
            "use postgresql+psycopg2:// or sqlite:///."
        )
    authority = url[match.end() :].split("?", 1)[0]
    if authority.count("@") > 1:
        return (
            f"{variable} has an '@' in its user name or password that is not escaped; "
            "percent-encode it as %40."
        )
    return None
