"""``heliox migrate``: upgrade the database's schema in place."""

from __future__ import annotations

import click
from sqlalchemy.exc import SQLAlchemyError

from heliox_orchestration.cli.common import cli, friendly_errors, resolve_database_url
from heliox_orchestration.db.engine import DatabaseConfigError, database_url_problem, make_engine, mask_url
from heliox_orchestration.db.migrate import migrate
from heliox_orchestration.db.schema_version import head_revision
from heliox_orchestration.secrets import redact_database_url
from heliox_orchestration.settings import DATABASE_URL_VAR, load_settings


@cli.command("migrate")
@click.option(
    "--database-url", help=f"Database to upgrade (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@friendly_errors
def migrate_command(database_url: str | None) -> None:
    """Upgrade the Heliox schema of the database in place to this version (idempotent).

    Every row is kept. On PostgreSQL it runs in one transaction: it either finishes or changes
    nothing. Stop the Dagster daemon first (runs refuse an out-of-date schema anyway)."""
    url, source, _ = resolve_database_url(database_url, load_settings())
    variable = "--database-url" if source == "--database-url" else DATABASE_URL_VAR
    problem = database_url_problem(url, variable)
    if problem:
        raise DatabaseConfigError(problem)
    engine = make_engine(url, variable=variable)
    click.echo(f"Database ({source}): {mask_url(url)}")
    try:
        report = migrate(engine)
    except (SQLAlchemyError, RuntimeError) as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise DatabaseConfigError(
            redact_database_url(f"the migration stopped: {lines[0]} (PostgreSQL: nothing was changed)", url)
        ) from None
    finally:
        engine.dispose()
    if not report.changed:
        click.echo(f"Already current: schema revision {head_revision()}.")
        return
    before = report.before
    was = "empty" if before.fresh else ("0.1 (unversioned)" if before.revision is None else before.revision)
    click.echo(f"Migrated from {was} to revision {head_revision()}.")
    for table in report.created_tables:
        click.echo(f"  created table {table}")
    for column in report.added_columns:
        click.echo(f"  added column {column}")
    for partition in report.partitions:
        click.echo(f"  created partition {partition}")
