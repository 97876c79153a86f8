"""The ``heliox`` command line."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from heliox_orchestration.db.engine import (
    DatabaseConfigError,
    embedded_database_url,
    ensure_schema,
    make_engine,
    mask_url,
    missing_tables,
    sqlite_path,
    table_row_counts,
)
from heliox_orchestration.db.schema import metadata
from heliox_orchestration.environment import check_environment, database_url_problem, load_environment
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
from heliox_orchestration.ingest.focus.validation import ImportInputError
from heliox_orchestration.money import format_usd
from heliox_orchestration.resources.slack import PREVIEW_LINE, WEBHOOK_URL_VAR, enabled_line
from heliox_orchestration.secrets import mask_secret, mask_webhook_url
from heliox_orchestration.settings import (
    DATABASE_URL_VAR,
    ENVIRONMENT_VARIABLES,
    MASKED_VARIABLES,
    Settings,
    SettingsError,
    load_settings,
)

F = TypeVar("F", bound=Callable[..., Any])
SLACK_LOGGER = "dagster.builtin.slack"  # get_dagster_logger("slack") of the Slack resource
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def friendly_errors(func: F) -> F:
    """Configuration and data errors: one line on stderr, exit code 2, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, DatabaseConfigError, ImportInputError) as exc:
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


def open_database(explicit: str | None, settings: Settings, *, read_only: bool = False) -> Engine:
    """The Heliox database; ``read_only`` commands never create or change anything in it (they
    work on a read-only file or role) and stop with one line when its tables do not exist."""
    url, source, _ = resolve_database_url(explicit, settings)
    variable = "--database-url" if source == "--database-url" else DATABASE_URL_VAR
    problem = database_url_problem(url, variable)
    if problem:
        raise DatabaseConfigError(problem)
    engine = make_engine(url, variable=variable, read_only=read_only)
    if not read_only:
        ensure_schema(engine, variable=variable)
        return engine
    missing = missing_tables(engine, variable=variable)
    if missing:
        raise DatabaseConfigError(
            f"{variable}={mask_url(url)} has no Heliox tables yet ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); they are created by the first Dagster run, "
            "`heliox seed-demo` or `heliox import-focus`."
        )
    return engine


@contextmanager
def progress_bar(path: Path, size: int) -> Iterator[Callable[[int], None]]:
    """The import's progress (a ``ProgressFactory``): a bar on stderr for files big enough to
    wait for."""
    if size < PROGRESS_MIN_BYTES:
        yield lambda _n: None
        return
    with click.progressbar(length=size, label=f"Reading {path.name}", file=sys.stderr) as bar:
        yield bar.update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Heliox: GPU cost alerting for Slack, orchestrated by Dagster."""


def _positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}.")
    return value


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


@cli.command()
@friendly_errors
def doctor() -> None:
    """Print the effective configuration (secrets masked), the database and the Dagster home.

    It validates exactly what the Dagster definitions validate when they load, and exits 2
    after listing every problem; it only reads the database."""
    check = check_environment()
    if check.webhook_url:
        click.echo(enabled_line(check.webhook_url))
    elif not check.production and not os.environ.get(WEBHOOK_URL_VAR, "").strip():
        click.echo(PREVIEW_LINE)
    click.echo("\nConfiguration:")
    for name, default, _ in ENVIRONMENT_VARIABLES:
        if name in (WEBHOOK_URL_VAR, DATABASE_URL_VAR):
            continue
        value = os.environ.get(name)
        if value and name in MASKED_VARIABLES:
            value = mask_secret(value, tail=name != "PROMETHEUS_PASSWORD")
        click.echo(f"  {name:<26} {value if value else default + ' (default)'}")
    problems = list(check.problems)
    if check.settings is not None and check.database_problem is None:
        try:
            _doctor_database(check.settings)
        except DatabaseConfigError as exc:
            problems.append(str(exc))
    home = os.environ.get("DAGSTER_HOME")
    click.echo(
        f"\nDagster home: {home}"
        if home
        else "\nDagster home: DAGSTER_HOME is not set (dagster dev uses a temporary folder; "
        "run storage is lost when it stops)"
    )
    if problems:
        click.echo("", err=True)
        for problem in problems:
            click.echo(f"Error: {problem}", err=True)
        if check.problems:
            count = len(check.problems)
            click.echo(
                f"{count} configuration problem{'s' if count != 1 else ''}: the Dagster definitions "
                "will not load until fixed.",
                err=True,
            )
        sys.exit(2)


def _doctor_database(settings: Settings) -> None:
    url, source, embedded = resolve_database_url(None, settings)
    click.echo(f"\nDatabase ({source}): {mask_url(url)}")
    path = sqlite_path(url)
    if path is not None and not path.exists():
        note = "filled with the demo fleet by the first Dagster run" if embedded else "created on first use"
        click.echo(f"  {path} does not exist yet ({note})")
        counts: dict[str, int | None] = dict.fromkeys(metadata.tables)
    else:
        counts = table_row_counts(make_engine(url, read_only=True))
    for table, count in counts.items():
        click.echo(f"  {table:<26} {'missing' if count is None else f'{count:,} rows'}")


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
    """Import the GPU usage of a FOCUS cost export (CSV, plain or .gz) into the Heliox database.

    Re-importing a file replaces the same resource-hours instead of adding to them; a file with
    any unusable value writes nothing. See docs/importing.md.
    """
    settings = load_settings()
    report = import_focus(
        None if dry_run else lambda: open_database(database_url, settings),
        path,
        utilization=utilization,
        dry_run=dry_run,
        tag_keys=TagKeys(model=model_tag, team=team_tag),
        progress=progress_bar,
        max_hourly_cost_usd=settings.max_hourly_cost_usd,
    )
    for line in format_report(report):
        click.echo(line)
    if report.resource_hours and not dry_run:
        click.echo(f"Database: {mask_url(resolve_database_url(database_url, settings)[0])}")


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
    from heliox_orchestration.clock import utc_now
    from heliox_orchestration.ingest.dcgm_mapping import MappingError, load_mapping
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


@cli.command("send-test")
@friendly_errors
def send_test_command() -> None:
    """Post "Test from Heliox" to SLACK_WEBHOOK_URL and print Slack's answer."""
    from heliox_orchestration.alerts.messages import connection_test_message
    from heliox_orchestration.resources.slack import (
        WEBHOOK_URL_VAR,
        SlackDeliveryError,
        SlackWebhook,
        webhook_url_from_env,
    )

    url = webhook_url_from_env()
    if url is None:
        click.echo(
            f"Error: {WEBHOOK_URL_VAR} is not set (Heliox is in preview mode); set it to the URL of "
            "a Slack Incoming Webhook, e.g. https://hooks.slack.com/services/T…/B…/…",
            err=True,
        )
        sys.exit(2)
    click.echo(f"Posting 'Test from Heliox' to {mask_webhook_url(url)}")
    try:
        result = SlackWebhook(webhook_url=url).send(connection_test_message())
    except SlackDeliveryError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    attempts = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    click.echo(f"HTTP {result.http_status} ok: delivered ({attempts}, {result.elapsed_seconds:.2f} s)")


@cli.command()
@click.argument("kind", type=click.Choice(["burn-rate", "idle-spend", "daily-summary"]))
@click.option(
    "--date",
    "run_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Day the job runs (default: today in TIMEZONE); the daily summary reports the day before.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the exact JSON payload that would be posted.")
@click.option(
    "--database-url", help=f"Database to read (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@friendly_errors
def preview(kind: str, run_date: dt.datetime | None, as_json: bool, database_url: str | None) -> None:
    """Compute a Slack message from the Heliox database as its job would, and print it; sends nothing.

    Where the job's data-quality checks would block it, prints why instead (the rule, example
    rows and what to fix) and no message."""
    import json

    from heliox_orchestration.alerts.preview import preview_message

    settings = load_settings()
    day = run_date.date() if run_date else settings.today()
    if day > settings.today():
        raise click.BadParameter(f"{day} is after today in {settings.timezone}.", param_hint="--date")
    result = preview_message(kind, open_database(database_url, settings, read_only=True), settings, day)
    # A blocked job has no message: only the note says why (the exit code stays 0).
    if as_json:
        if result.message is not None:
            click.echo(json.dumps(result.message.to_payload(), indent=2, ensure_ascii=False))
        click.echo(f"Preview: {result.note}", err=True)
    else:
        if result.message is not None:
            click.echo(result.message.to_plain_text() + "\n")
        click.echo(f"Preview: {result.note}")


@contextmanager
def slack_retries_shown() -> Iterator[None]:
    """Each Slack retry as one line on stderr while `heliox run` waits (Dagster's own console
    log is off there: it prints every failure with its stack trace)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    slack_log = logging.getLogger(SLACK_LOGGER)
    slack_log.addHandler(handler)
    try:
        yield
    finally:
        slack_log.removeHandler(handler)


@cli.command("run")
@click.argument("kind", type=click.Choice(["daily-summary", "burn-rate", "idle-spend"]))
@friendly_errors
def run_command(kind: str) -> None:
    """Run one scheduled check now: refresh its assets, then its alert job.

    Both are runs of the heliox_orchestration code location in the Dagster instance of
    DAGSTER_HOME, executed here: the UI shows them on the job's page afterwards, and the
    run-failure sensor reports a failed one. Without SLACK_WEBHOOK_URL the message is only
    previewed and printed here.
    """
    from dagster import DagsterInstance

    from heliox_orchestration.automation.manual import heliox_location, run_check

    # The runs load the code location: what would stop it is one line here, not its traceback.
    settings = load_environment()
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    with instance, heliox_location(instance) as location, slack_retries_shown():
        outcomes = run_check(kind, location, settings, dt.datetime.now(dt.UTC))
    for outcome in outcomes:
        state = "succeeded" if outcome.success else f"FAILED: {outcome.error}"
        click.echo(f"{outcome.job}: {state}")
        for failed in outcome.failed_checks:
            click.echo(f"  check {failed.check} failed: {failed.reason}")
    last = outcomes[-1]
    if last.metadata.get("slack_preview"):
        click.echo("\nPreview mode (SLACK_WEBHOOK_URL is not set); the message would be:\n")
        click.echo(last.metadata["slack_preview"])
    elif last.metadata.get("delivery") == "skipped":
        click.echo("Nothing sent: this alert was already sent or previewed (see `heliox alerts`).")
    elif "delivery" in last.metadata:
        click.echo(f"Delivery: {last.metadata['delivery']}")
    if not all(o.success for o in outcomes):
        sys.exit(1)


@cli.command("alerts")
@click.option(
    "--since", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only alerts created on or after this day."
)
@click.option("--limit", type=int, default=50, show_default=True, callback=_positive)
@click.option(
    "--database-url", help=f"Database to read (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
)
@friendly_errors
def alerts_command(since: dt.datetime | None, limit: int, database_url: str | None) -> None:
    """List the alert ledger, newest first: what was sent, previewed, failed or refused, and why."""
    from heliox_orchestration.alerts.ledger import list_entries, shown_status
    from heliox_orchestration.resources.slack import (
        WEBHOOK_URL_VAR,
        SlackConfigError,
        webhook_fingerprint,
        webhook_url_from_env,
    )

    settings = load_settings()
    url = resolve_database_url(database_url, settings)[0]
    path = sqlite_path(url)
    if path is not None and not path.exists():
        click.echo(f"No alerts in the ledger: the database {path} does not exist yet.")
        return
    engine = open_database(database_url, settings, read_only=True)
    start = dt.datetime.combine(since.date(), dt.time(), settings.tz) if since else None
    entries = list_entries(engine, since=start, limit=limit)
    if not entries:
        click.echo("No alerts in the ledger" + (f" since {since:%Y-%m-%d}." if since else "."))
        return
    try:
        current = webhook_fingerprint(webhook_url_from_env())
    except SlackConfigError:
        current = None
    click.echo(f"{'created (' + settings.timezone + ')':<26} {'status':<10} {'tries':>5} {'http':>4}  key")
    for e in entries:
        created = e["created_at"].astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
        http = e["http_status"] or ""
        status = shown_status(e)
        click.echo(f"{created:<26} {status:<10} {e['attempts']:>5} {http:>4}  {e['alert_key']}")
        if e["last_error"]:
            click.echo(f"{'':<26} last error: {e['last_error']}")
        if status == "refused":
            then = (
                f"not retried while {WEBHOOK_URL_VAR} is this webhook: fix it as the error says"
                if e["refused_webhook"] == current
                else f"{WEBHOOK_URL_VAR} has changed since: redelivered while still relevant"
            )
            click.echo(f"{'':<26} refused: {then}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
