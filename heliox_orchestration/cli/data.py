"""``heliox seed-demo``, ``import-focus`` and ``import-prometheus``: usage rows in."""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys

import click

from heliox_orchestration.cli.common import (
    cli,
    friendly_errors,
    open_database,
    progress_bar,
    resolve_database_url,
    rows_bar,
)
from heliox_orchestration.clock import utc_now
from heliox_orchestration.db.engine import (
    DatabaseConfigError,
    mask_url,
)
from heliox_orchestration.ingest.dcgm_mapping import MappingError, load_mapping
from heliox_orchestration.ingest.demo_fleet import (
    DEFAULT_DAYS,
    DEFAULT_GPUS,
    EARLIEST_DEMO_DATE,
    MAX_DEMO_DAYS,
    MAX_DEMO_GPUS,
    MAX_DEMO_ROWS,
    MAX_DEMO_SEED,
    FleetSpec,
    expected_rows,
    seed_demo,
)
from heliox_orchestration.ingest.focus.charges import TagKeys
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.report import format_report
from heliox_orchestration.ingest.prometheus import (
    PrometheusClient,
    PrometheusConfigError,
    PrometheusError,
)
from heliox_orchestration.ingest.utilization import (
    fill_usage_utilization,
    ingest_utilization,
    utilization_join_report,
)
from heliox_orchestration.money import format_usd
from heliox_orchestration.settings import (
    DATABASE_URL_VAR,
    SettingsError,
    load_settings,
)


def _end_date(ctx: click.Context, param: click.Parameter, value: dt.datetime | None) -> dt.datetime | None:
    """On or after EARLIEST_DEMO_DATE and not after today in TIMEZONE (a future day has no hours
    to write yet)."""
    if value is None:
        return None
    try:
        settings = load_settings()
    except SettingsError:
        return value  # the command reports the setting itself, naming the variable
    today = settings.today()
    if not EARLIEST_DEMO_DATE <= value.date() <= today:
        raise click.BadParameter(
            f"{value.date().isoformat()} is out of range; allowed: {EARLIEST_DEMO_DATE} through "
            f"today ({today} in {settings.timezone}).",
        )
    return value


@cli.command("seed-demo")
@click.option(
    "--database-url", help=f"Database to fill (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@click.option(
    "--gpus",
    type=click.IntRange(1, MAX_DEMO_GPUS),
    default=DEFAULT_GPUS,
    show_default=True,
    help=f"Fleet size (1-{MAX_DEMO_GPUS:,}).",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DEMO_DAYS),
    default=DEFAULT_DAYS,
    show_default=True,
    help=f"Days of history (1-{MAX_DEMO_DAYS:,}).",
)
@click.option(
    "--end-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    callback=_end_date,
    help=f"Last local day, {EARLIEST_DEMO_DATE} through today (default: today in TIMEZONE).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_DEMO_SEED),
    default=42,
    show_default=True,
    help="Random seed (0 to 2**32-1): the same seed gives the same rows.",
)
@friendly_errors
def seed_demo_command(
    database_url: str | None, gpus: int, days: int, end_date: dt.datetime | None, seed: int
) -> None:
    """Generate a realistic, deterministic demo GPU fleet (hourly usage rows).

    Re-running replaces the demo rows of the same range; rows of real resources are never touched.
    """
    rows = gpus * days * 24
    if rows > MAX_DEMO_ROWS:
        raise click.BadParameter(
            f"{gpus:,} GPUs x {days:,} days is {rows:,} hourly rows; at most {MAX_DEMO_ROWS:,} "
            "(lower --gpus or --days).",
            param_hint="'--gpus' x '--days'",
        )
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
        f"{report.end:%Y-%m-%d %H:%M} UTC; total cost {format_usd(report.total_cost_usd)}"
    )


@cli.command("import-focus")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--utilization",
    type=click.Path(dir_okay=False),
    help="CSV of GPU utilization samples (timestamp, resource_id, gpu_utilization_pct), averaged per hour.",
)
@click.option("--dry-run", is_flag=True, help="Read, validate and report only; the database is not opened.")
@click.option(
    "--database-url", help=f"Database to write (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@click.option("--model-tag", default="model", show_default=True, help="Tags key naming the workload (model).")
@click.option("--team-tag", default="team", show_default=True, help="Tags key naming the team.")
@friendly_errors
def import_focus_command(
    path: str, utilization: str | None, dry_run: bool, database_url: str | None, model_tag: str, team_tag: str
) -> None:
    """Import the GPU usage of a FOCUS cost export (Parquet, or CSV plain or .gz) into the Heliox database.

    Re-importing a file replaces the same resource-hours instead of adding to them; a file with
    any unusable value writes nothing. See docs/importing.md.
    """
    settings = load_settings()
    url = resolve_database_url(database_url, settings)[0]
    # The modules loaded so far are never garbage: kept out of the collector's full passes, which
    # the import's many short-lived objects trigger (a few percent of a big import).
    gc.freeze()
    report = import_focus(
        None if dry_run else lambda: open_database(database_url, settings),
        path,
        utilization=utilization,
        dry_run=dry_run,
        tag_keys=TagKeys(model=model_tag, team=team_tag),
        progress=progress_bar,
        write_progress=rows_bar,
        max_hourly_cost_usd=settings.max_hourly_cost_usd,
        # On PostgreSQL the file is written as it is read, each chunk in the one transaction.
        stream=url.startswith("postgresql"),
    )
    for line in format_report(report):
        click.echo(line)
    if report.resource_hours and not dry_run:
        click.echo(f"Database: {mask_url(url)}")


_HOUR_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]


def _utc_hour_option(
    ctx: click.Context, param: click.Parameter, value: dt.datetime | None
) -> dt.datetime | None:
    if value is None:
        return None
    if value.minute or value.second:
        raise click.BadParameter(f"{value:%Y-%m-%d %H:%M} is not a whole hour.")
    return value.replace(tzinfo=dt.UTC)


@cli.command("import-prometheus")
@click.option(
    "--start",
    type=click.DateTime(formats=_HOUR_FORMATS),
    callback=_utc_hour_option,
    help="First UTC hour (YYYY-MM-DD or YYYY-MM-DDTHH:00; default: 24 hours before --end).",
)
@click.option(
    "--end",
    type=click.DateTime(formats=_HOUR_FORMATS),
    callback=_utc_hour_option,
    help="UTC hour to stop before (default: the start of the current hour).",
)
@click.option(
    "--database-url", help=f"Database to write (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@click.option(
    "--attribute-workloads",
    is_flag=True,
    help="Also give cost rows without a model name or team the workload seen on their GPUs.",
)
def import_prometheus_command(
    start: dt.datetime | None, end: dt.datetime | None, database_url: str | None, attribute_workloads: bool
) -> None:
    """Import hourly GPU utilization from Prometheus (NVIDIA DCGM exporter metrics).

    Reads PROMETHEUS_URL (and PROMETHEUS_BEARER_TOKEN or PROMETHEUS_USERNAME/PASSWORD) and the
    label mapping in HELIOX_DCGM_MAPPING; stores gpu_utilization_hourly, copies it into the cost
    rows of the same hours, and reports cost without telemetry and telemetry without cost.
    Re-running replaces the same hours. See docs/importing.md.
    """

    try:
        settings = load_settings()
        end = end or utc_now().replace(minute=0, second=0, microsecond=0)
        start = start or end - dt.timedelta(days=1)
        if end <= start:
            raise click.BadParameter(f"{end:%Y-%m-%d %H:%M} is not after --start.", param_hint="--end")
        mapping = load_mapping(settings.dcgm_mapping_path)
        client = PrometheusClient.from_env(os.environ)
        engine = open_database(database_url, settings)
        click.echo(f"Prometheus: {client.describe()}")
        with click.progressbar(length=1, label="queries", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            report = ingest_utilization(engine, client, mapping, start, end, progress=progress)
        filled = fill_usage_utilization(engine, start, end, attribute_workloads=attribute_workloads)
        join = utilization_join_report(engine, start, end)
    except (SettingsError, DatabaseConfigError, MappingError, PrometheusConfigError, PrometheusError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    for line in report.lines():
        click.echo(line)
    attributed = f"; {filled.attributed_rows:,} given a workload or team" if attribute_workloads else ""
    click.echo(f"Cost rows given telemetry utilization: {filled.utilization_rows:,}{attributed}")
    for line in join.lines():
        click.echo(line)
