"""``heliox preview``, ``run`` and ``alerts``: what an alert would say, one check now, and the
alert ledger."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from dagster import DagsterInstance

from heliox_orchestration.alerts.catalog import kinds_with, preview_message
from heliox_orchestration.alerts.kinds import AlertKeyError, kind_of
from heliox_orchestration.alerts.ledger import list_entries, shown_status
from heliox_orchestration.alerts.mutes import muted_entries
from heliox_orchestration.alerts.routes import UnknownDestination, team_of_key
from heliox_orchestration.automation.manual import RUN_KINDS, heliox_location, run_check
from heliox_orchestration.cli.common import (
    SLACK_LOGGER,
    _positive,
    cli,
    friendly_errors,
    open_database,
    resolve_database_url,
    use_dagster_home,
)
from heliox_orchestration.db.engine import (
    sqlite_path,
)
from heliox_orchestration.environment import load_environment
from heliox_orchestration.resources.slack import (
    SlackConfigError,
    validate_webhook_url,
    webhook_fingerprint,
)
from heliox_orchestration.settings import (
    DATABASE_URL_VAR,
    Settings,
    load_settings,
)


@cli.command()
@click.argument("kind", type=click.Choice(kinds_with("preview")))
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
@click.argument("kind", type=click.Choice(RUN_KINDS))
@friendly_errors
def run_command(kind: str) -> None:
    """Run one scheduled check now: refresh its assets, then its alert job.

    Both are runs of the heliox_orchestration code location in the Dagster instance of
    DAGSTER_HOME, executed here: the UI shows them on the job's page afterwards, and the
    run-failure sensor reports a failed one. Without SLACK_WEBHOOK_URL the message is only
    previewed and printed here.
    """
    # The runs load the code location: what would stop it is one line here, not its traceback.
    settings = load_environment()
    use_dagster_home(settings)
    instance = DagsterInstance.get()
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
    """List the alert ledger, newest first: what was sent, previewed, failed, refused or muted,
    and why."""

    settings = load_settings()
    url = resolve_database_url(database_url, settings)[0]
    path = sqlite_path(url)
    if path is not None and not path.exists():
        click.echo(f"No alerts in the ledger: the database {path} does not exist yet.")
        return
    engine = open_database(database_url, settings, read_only=True)
    start = dt.datetime.combine(since.date(), dt.time(), settings.tz) if since else None
    entries = [(e["created_at"], e) for e in list_entries(engine, since=start, limit=limit)]
    entries += [(m["muted_at"], m) for m in muted_entries(engine, since=start, limit=limit)]
    entries = sorted(entries, key=lambda pair: pair[0], reverse=True)[:limit]
    if not entries:
        click.echo("No alerts in the ledger" + (f" since {since:%Y-%m-%d}." if since else "."))
        return
    click.echo(f"{'created (' + settings.timezone + ')':<26} {'status':<10} {'tries':>5} {'http':>4}  key")
    for at, e in entries:
        created = at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")
        if "mute" in e:
            click.echo(f"{created:<26} {'muted':<10} {'':>5} {'':>4}  {e['alert_key']}")
            click.echo(f"{'':<26} {e['mute'].describe(settings.timezone)}")
            continue
        http = e["http_status"] or ""
        status = shown_status(e)
        click.echo(f"{created:<26} {status:<10} {e['attempts']:>5} {http:>4}  {e['alert_key']}")
        if e["last_error"]:
            click.echo(f"{'':<26} last error: {e['last_error']}")
        if status == "refused":
            click.echo(f"{'':<26} refused: {_refused_then(e['alert_key'], e['refused_webhook'], settings)}")


def _refused_then(key: str, refused_webhook: str | None, settings: Settings) -> str:
    """Whether the webhook its destination reads now is the one that refused it."""
    try:
        kind = kind_of(key)
        team = team_of_key(key, settings)
    except (AlertKeyError, UnknownDestination):
        return "its destination is no longer configured: it is not redelivered"
    route = settings.team_route(team)
    variables = [route.webhook_env] if route is not None else list(kind.webhook_variables())
    variable = next((v for v in variables if os.environ.get(v, "").strip()), variables[-1])
    try:
        current = webhook_fingerprint(validate_webhook_url(os.environ.get(variable), variable=variable))
    except SlackConfigError:
        current = None
    if refused_webhook == current:
        return f"not retried while {variable} is this webhook: fix it as the error says"
    return f"{variable} has changed since: redelivered while still relevant"
