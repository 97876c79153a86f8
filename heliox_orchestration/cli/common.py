"""What every ``heliox`` command shares: the click group, one-line errors, the database they
open and the progress bar.

The group loads a command's module only when that command runs (``COMMANDS``): ``heliox
import-focus`` starts without importing Dagster and the alert modules (seconds on a busy
machine), and ``heliox --help`` still lists every command."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from heliox_orchestration.db.engine import (
    DatabaseConfigError,
    check_schema_status,
    database_url_problem,
    embedded_database_url,
    ensure_schema,
    make_engine,
    mask_url,
    read_schema_status,
)
from heliox_orchestration.home import DAGSTER_HOME_VAR, EMBEDDED_INSTANCE_FILE, HomeError, dagster_home
from heliox_orchestration.ingest.focus.validation import ImportInputError
from heliox_orchestration.settings import (
    DATABASE_URL_VAR,
    Settings,
    SettingsError,
)

F = TypeVar("F", bound=Callable[..., Any])
SLACK_LOGGER = "dagster.builtin.slack"  # get_dagster_logger("slack") of the Slack resource
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
PROGRESS_MIN_ROWS = 200_000


USER_ERRORS: tuple[type[Exception], ...] = (SettingsError, DatabaseConfigError, ImportInputError)


def friendly_errors(func: F, also: tuple[type[Exception], ...] = ()) -> F:
    """Configuration and data errors (``USER_ERRORS`` and ``also``): one line on stderr, exit
    code 2, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (*USER_ERRORS, *also) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def use_dagster_home(settings: Settings) -> Path:
    """The Dagster home of this command (``DAGSTER_HOME``, else the project's ``.dagster``, as
    ``make run``), created with the embedded instance file when new; set for Dagster to find."""
    try:
        home = dagster_home(os.environ, settings.home)
    except HomeError as exc:
        raise SettingsError(str(exc)) from None
    home.mkdir(parents=True, exist_ok=True)
    instance_file = home / "dagster.yaml"
    template = settings.home / EMBEDDED_INSTANCE_FILE if settings.home else None
    if not instance_file.exists() and template is not None and template.is_file():
        instance_file.write_text(template.read_text())
    os.environ[DAGSTER_HOME_VAR] = str(home)
    return home


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
    status = read_schema_status(engine, variable=variable)
    if status.fresh:
        missing = status.missing_tables
        raise DatabaseConfigError(
            f"{variable}={mask_url(url)} has no Heliox tables yet ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); they are created by the first Dagster run, "
            "`heliox seed-demo` or `heliox import-focus`."
        )
    check_schema_status(engine, status, variable)
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


@contextmanager
def rows_bar(rows: int) -> Iterator[Callable[[int], None]]:
    """The import's write progress (a ``WriteProgressFactory``): a bar on stderr for writes big
    enough to wait for."""
    if rows < PROGRESS_MIN_ROWS:
        yield lambda _n: None
        return
    with click.progressbar(length=rows, label="Writing resource-hours", file=sys.stderr) as bar:
        yield bar.update


# Each command and the module of this package that defines it (importing the module registers it).
COMMANDS: Mapping[str, str] = {
    "doctor": "setup",
    "send-test": "setup",
    "migrate": "storage",
    "seed-demo": "data",
    "import-focus": "data",
    "import-prometheus": "data",
    "preview": "alerts",
    "run": "alerts",
    "alerts": "alerts",
    "mute": "mutes",
    "unmute": "mutes",
    "mutes": "mutes",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module the first time the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"heliox_orchestration.cli.{COMMANDS[cmd_name]}")
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Heliox: GPU cost alerting for Slack, orchestrated by Dagster."""


def _positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}.")
    return value
