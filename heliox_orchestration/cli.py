"""The ``heliox`` command line."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from heliox_orchestration.db.demo_fleet import (
    DEFAULT_DAYS,
    DEFAULT_GPUS,
    FleetSpec,
    expected_rows,
    seed_demo,
)
from heliox_orchestration.db.engine import (
    DATABASE_URL_VAR,
    DatabaseConfigError,
    embedded_database_url,
    ensure_schema,
    make_engine,
    mask_url,
    table_row_counts,
)
from heliox_orchestration.secrets import mask_webhook_url
from heliox_orchestration.settings import ENVIRONMENT_VARIABLES, Settings, SettingsError, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Configuration and data errors: one line on stderr, exit code 2, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, DatabaseConfigError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def resolve_database_url(explicit: str | None, settings: Settings) -> tuple[str, str, bool]:
    """(url, where it came from, is it the embedded default)."""
    if explicit:
        return explicit, "--database-url", False
    if os.environ.get(DATABASE_URL_VAR):
        return os.environ[DATABASE_URL_VAR], DATABASE_URL_VAR, False
    return embedded_database_url(settings.embedded_database_path), "embedded default", True


def open_database(explicit: str | None, settings: Settings) -> Engine:
    url, source, _ = resolve_database_url(explicit, settings)
    variable = "--database-url" if source == "--database-url" else DATABASE_URL_VAR
    engine = make_engine(url, variable=variable)
    ensure_schema(engine, variable=variable)
    return engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Heliox: GPU cost alerting for Slack, orchestrated by Dagster."""


def _positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}.")
    return value


@cli.command("seed-demo")
@click.option(
    "--database-url", help=f"Database to fill (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@click.option(
    "--gpus", type=int, default=DEFAULT_GPUS, show_default=True, callback=_positive, help="Fleet size."
)
@click.option(
    "--days", type=int, default=DEFAULT_DAYS, show_default=True, callback=_positive, help="Days of history."
)
@click.option(
    "--end-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Last local day (default: today in TIMEZONE).",
)
@click.option(
    "--seed", type=int, default=42, show_default=True, help="Random seed: the same seed gives the same rows."
)
@friendly_errors
def seed_demo_command(
    database_url: str | None, gpus: int, days: int, end_date: dt.datetime | None, seed: int
) -> None:
    """Generate a realistic, deterministic demo GPU fleet (hourly usage rows).

    Re-running replaces the demo rows of the same range; rows of real resources are never touched.
    """
    settings = load_settings()
    engine = open_database(database_url, settings)
    spec = FleetSpec(
        gpus=gpus,
        days=days,
        end_date=end_date.date() if end_date else None,
        seed=seed,
        timezone=settings.timezone,
    )
    click.echo(f"Seeding {gpus:,} GPUs x {days} days into {mask_url(engine.url)}")
    with click.progressbar(length=expected_rows(spec), label="rows", file=sys.stderr) as bar:
        report = seed_demo(engine, spec, progress=bar.update)
    if report.replaced_rows:
        click.echo(f"Replaced {report.replaced_rows:,} existing demo rows in the same range.")
    click.echo(
        f"Wrote {report.rows:,} rows from {report.start:%Y-%m-%d %H:%M} to "
        f"{report.end:%Y-%m-%d %H:%M} UTC; total cost ${report.total_cost_usd:,.2f}"
    )


@cli.command()
@friendly_errors
def doctor() -> None:
    """Print the effective configuration (secrets masked), the database and the Dagster home."""
    settings = load_settings()
    webhook = os.environ.get("SLACK_WEBHOOK_URL")
    if webhook:
        click.echo(f"Slack notifications enabled (webhook {mask_webhook_url(webhook)})")
    else:
        click.echo("Slack notifications disabled (preview mode): SLACK_WEBHOOK_URL is not set")
    click.echo("\nConfiguration:")
    for name, default, _ in ENVIRONMENT_VARIABLES:
        if name in ("SLACK_WEBHOOK_URL", DATABASE_URL_VAR):
            continue
        value = os.environ.get(name)
        click.echo(f"  {name:<26} {value if value else default + ' (default)'}")
    url, source, _ = resolve_database_url(None, settings)
    click.echo(f"\nDatabase ({source}): {mask_url(url)}")
    engine = make_engine(url)
    for table, count in table_row_counts(engine).items():
        click.echo(f"  {table:<26} {'missing' if count is None else f'{count:,} rows'}")
    home = os.environ.get("DAGSTER_HOME")
    click.echo(
        f"\nDagster home: {home}"
        if home
        else "\nDagster home: DAGSTER_HOME is not set (dagster dev uses a temporary folder; "
        "run storage is lost when it stops)"
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
