"""``heliox mute``, ``unmute`` and ``mutes``: hold back one kind of alert (or its alerts about one
team, resource or model) for a while, with who, when and why, in the Heliox database."""

from __future__ import annotations

import datetime as dt
import getpass
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.kinds import MUTE_SCOPES
from heliox_orchestration.alerts.mutes import MAX_MUTE, Mute, MuteError, add_mute, end_mute, list_mutes
from heliox_orchestration.cli.common import cli, friendly_errors, open_database
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings, load_settings

DURATION = re.compile(r"(?P<count>[0-9]{1,4})(?P<unit>[mhdw])")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DATABASE_HELP = f"Heliox database (default: ${DATABASE_URL_VAR} or the embedded SQLite file)."
F = TypeVar("F", bound=Callable[..., Any])


def mute_errors(func: F) -> F:
    """``friendly_errors``, a bad mute (``MuteError``) included."""
    return friendly_errors(func, also=(MuteError,))


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric user)
        return "unknown"


def parse_duration(text: str) -> dt.timedelta:
    match = DURATION.fullmatch(text.strip())
    if match is None:
        problem = f"{text!r} is not a duration; use e.g. 90m, 12h, 7d or 2w."
        raise click.BadParameter(problem, param_hint="--for")
    delta = dt.timedelta(**{UNITS[match["unit"]]: int(match["count"])})
    if not dt.timedelta(0) < delta <= MAX_MUTE:
        raise click.BadParameter(f"{text} is out of range; a mute lasts 1m to 366d.", param_hint="--for")
    return delta


def parse_until(text: str, settings: Settings) -> dt.datetime:
    """A local date (the mute ends at its start, midnight in TIMEZONE) or date and time."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day, dt.time(), settings.tz).astimezone(dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace(" ", "T"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=settings.tz)).astimezone(dt.UTC)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date; use YYYY-MM-DD (midnight starting that day) or 'YYYY-MM-DD HH:MM', "
            f"in {settings.timezone}.",
            param_hint="--until",
        ) from None


def _line(mute: Mute, timezone: str) -> str:
    until = mute.until_text(timezone)
    return f"mute {mute.mute_id}: {mute.what} until {until} by {mute.created_by}: {mute.reason}"


@cli.command("mute")
@click.argument("kind", type=click.Choice([k.name for k in all_kinds()]))
@click.option("--team", help="Only the alerts about this team (as in the usage data's team column).")
@click.option("--resource", help="Only the alerts about this GPU resource id.")
@click.option("--model", help="Only the alerts about this model (workload).")
@click.option("--for", "duration", help="How long: 90m, 12h, 7d, 2w.")
@click.option("--until", help="Until a local date (its midnight, in TIMEZONE) or 'YYYY-MM-DD HH:MM'.")
@click.option("--reason", required=True, help="Why, for whoever reads `heliox mutes` or a skipped tick.")
@click.option("--by", help="Who mutes (default: your OS user name).")
@click.option("--database-url", help=DATABASE_HELP)
@mute_errors
def mute_command(
    kind: str,
    team: str | None,
    resource: str | None,
    model: str | None,
    duration: str | None,
    until: str | None,
    reason: str,
    by: str | None,
    database_url: str | None,
) -> None:
    """Hold back KIND's alerts (all, or those about one team, resource or model) for a while.

    Sensors skip with "muted until ... by ...: reason", alert jobs drop muted alerts, `heliox
    alerts` lists them as muted. The mute ends by itself; `heliox unmute ID` ends it sooner."""
    scopes = {s: v for s, v in (("team", team), ("resource", resource), ("model", model)) if v is not None}
    if len(scopes) > 1:
        raise MuteError(f"give at most one of {', '.join('--' + s for s in MUTE_SCOPES)}.")
    if (duration is None) == (until is None):
        raise MuteError("give either --for (e.g. 7d) or --until (e.g. 2026-02-01), not both.")
    settings = load_settings()
    now = dt.datetime.now(dt.UTC)
    end = now + parse_duration(duration) if duration is not None else parse_until(until or "", settings)
    if end <= now:
        raise click.BadParameter(f"{until} is not in the future ({settings.timezone}).", param_hint="--until")
    scope, value = next(iter(scopes.items()), (None, None))
    mute = add_mute(
        open_database(database_url, settings),
        kind,
        scope=scope,
        value=value,
        until=end,
        reason=reason,
        by=by if by is not None else os_user(),
        now=now,
    )
    click.echo(
        f"Muted {mute.what} until {mute.until_text(settings.timezone)}: {mute.reason} (mute {mute.mute_id})."
    )
    click.echo(f"`heliox unmute {mute.mute_id}` ends it sooner; `heliox mutes` lists the mutes in force.")


@cli.command("unmute")
@click.argument("mute_id", type=int)
@click.option("--by", help="Who ends it (default: your OS user name).")
@click.option("--database-url", help=DATABASE_HELP)
@mute_errors
def unmute_command(mute_id: int, by: str | None, database_url: str | None) -> None:
    """End mute MUTE_ID now (`heliox mutes` lists them)."""
    settings = load_settings()
    now = dt.datetime.now(dt.UTC)
    mute = end_mute(open_database(database_url, settings), mute_id, by=by or os_user(), now=now)
    click.echo(f"Ended mute {mute.mute_id} ({mute.what}); its alerts are sent again from now on.")


@cli.command("mutes")
@click.option("--all", "show_all", is_flag=True, help="Also the mutes that expired or were ended.")
@click.option("--database-url", help=DATABASE_HELP)
@mute_errors
def mutes_command(show_all: bool, database_url: str | None) -> None:
    """List the mutes in force (with --all, every mute): what, until when, who and why."""
    settings = load_settings()
    now = dt.datetime.now(dt.UTC)
    mutes = list_mutes(open_database(database_url, settings, read_only=True), now, include_inactive=show_all)
    if not mutes:
        click.echo("No mutes." if show_all else "No mutes in force; every alert is sent.")
        return
    for mute in mutes:
        state = ""
        if show_all and mute.ended_at is not None:
            ended = mute.ended_at.astimezone(settings.tz)
            state = f" [ended {ended:%Y-%m-%d %H:%M} by {mute.ended_by}]"
        elif show_all and not mute.active(now):
            state = " [expired]" if mute.muted_until <= now else " [not started]"
        click.echo(_line(mute, settings.timezone) + state)
