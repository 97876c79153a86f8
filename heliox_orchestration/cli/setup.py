"""``heliox doctor`` and ``send-test``: is Heliox configured, and does Slack answer?"""

from __future__ import annotations

import os
import sys

import click

from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.messages import connection_test_message
from heliox_orchestration.cli.common import (
    cli,
    friendly_errors,
    resolve_database_url,
)
from heliox_orchestration.db.engine import (
    DatabaseConfigError,
    check_schema_status,
    listed_name,
    make_engine,
    mask_url,
    read_schema_status,
    sqlite_path,
    table_row_counts,
)
from heliox_orchestration.db.schema import metadata
from heliox_orchestration.environment import EnvironmentCheck, check_environment
from heliox_orchestration.home import HOME_VAR, HomeError, dagster_home
from heliox_orchestration.resources.slack import (
    PREVIEW_LINE,
    WEBHOOK_URL_VAR,
    SlackDeliveryError,
    SlackWebhook,
    enabled_line,
    webhook_url_from_env,
)
from heliox_orchestration.secrets import mask_secret, mask_webhook_url
from heliox_orchestration.settings import (
    DATABASE_URL_VAR,
    ENVIRONMENT_VARIABLES,
    MASKED_VARIABLES,
    Settings,
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
    _doctor_destinations(check)
    click.echo("\nConfiguration:")
    webhooks = {d.variable for d in check.destinations} | {k.webhook_variable for k in all_kinds()}
    for name, default, _ in ENVIRONMENT_VARIABLES:
        if name in (WEBHOOK_URL_VAR, DATABASE_URL_VAR) or name in webhooks:
            continue
        value = os.environ.get(name)
        if value and name in MASKED_VARIABLES:
            value = mask_secret(value, tail=name != "PROMETHEUS_PASSWORD")
        if not value and name == "HELIOX_START_DATE" and check.settings is not None:
            default = check.settings.start_date.isoformat()  # the embedded demo's window start
        click.echo(f"  {name:<26} {value if value else default + ' (default)'}")
    problems = list(check.problems)
    if check.settings is not None and check.database_problem is None:
        try:
            _doctor_database(check.settings)
        except DatabaseConfigError as exc:
            problems.append(str(exc))
    project = check.settings.home if check.settings is not None else None
    click.echo(f"\nProject folder ({HOME_VAR} or the checkout): {project or 'none found'}")
    try:
        click.echo(f"Dagster home: {dagster_home(os.environ, project)}")
    except HomeError as exc:
        problems.append(str(exc))
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


def _doctor_destinations(check: EnvironmentCheck) -> None:
    """Where each kind's alerts and each routed team's go, every webhook masked."""
    click.echo("\nSlack destinations (webhooks masked):")
    width = max((len(d.label) for d in check.destinations), default=10) + 2
    for d in check.destinations:
        where = mask_webhook_url(d.webhook_url) if d.webhook_url else "(not set: preview mode)"
        if not d.webhook_url and os.environ.get(d.variable, "").strip():
            where = "(invalid: see the error below)"
        click.echo(f"  {d.label:<{width}}{d.variable:<34} {where}")


def _doctor_database(settings: Settings) -> None:
    url, source, embedded = resolve_database_url(None, settings)
    click.echo(f"\nDatabase ({source}): {mask_url(url)}")
    path = sqlite_path(url)
    if path is not None and not path.exists():
        note = "filled with the demo fleet by the first Dagster run" if embedded else "created on first use"
        click.echo(f"  {path} does not exist yet ({note})")
        counts: dict[str, int | None] = dict.fromkeys(map(listed_name, metadata.tables))
        status = None
    else:
        engine = make_engine(url, read_only=True)
        counts = table_row_counts(engine)
        status = read_schema_status(engine)
    for table, count in counts.items():
        click.echo(f"  {table:<26} {'missing' if count is None else f'{count:,} rows'}")
    if status is not None and not status.fresh:
        click.echo(f"  {'schema':<26} {status.describe()}")
        check_schema_status(engine, status)  # the runs would refuse it: a problem


@cli.command("send-test")
@friendly_errors
def send_test_command() -> None:
    """Post "Test from Heliox" to SLACK_WEBHOOK_URL and print Slack's answer."""

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
