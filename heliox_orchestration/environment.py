"""Everything the code location validates when it loads, in one place: the settings, every Slack
webhook (``SLACK_WEBHOOK_URL``, each alert kind's ``SLACK_WEBHOOK_URL_<KIND>``, each team's
variable of the routing file), ``ALERTS_ENABLED`` against the alert-kind registry, the Heliox
database URL, with ``PROMETHEUS_URL`` the Prometheus credentials and the DCGM label mapping, and,
with ``HELIOX_ENV=production``, that both URLs are set. ``heliox doctor`` runs exactly this, so it
can never call a configuration healthy that stops the definitions from loading."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.db.engine import database_url_problem
from heliox_orchestration.ingest.dcgm_mapping import MappingError, load_mapping
from heliox_orchestration.ingest.prometheus import (
    BEARER_TOKEN_VAR,
    PASSWORD_VAR,
    USERNAME_VAR,
    PrometheusConfigError,
    validate_credentials,
)
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, validate_webhook_url
from heliox_orchestration.routing import ROUTING_FILE_VAR
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings, SettingsError, load_settings

ENVIRONMENT_VAR = "HELIOX_ENV"
DEVELOPMENT = "development"
PRODUCTION = "production"


@dataclass(frozen=True)
class Destination:
    """Where one kind's default alerts, or one team's, are sent (``heliox doctor``)."""

    label: str  # "burn-rate" or "team ml-platform"
    variable: str  # the variable the webhook comes from
    webhook_url: str | None  # validated; None: preview mode (or invalid, then in problems)


@dataclass(frozen=True)
class EnvironmentCheck:
    settings: Settings | None  # None when a setting is invalid
    webhook_url: str | None  # validated; None in preview mode or when invalid
    database_url: str | None  # None: the embedded default
    problems: tuple[str, ...] = field(default=())
    database_problem: str | None = None  # also in problems
    production: bool = False  # HELIOX_ENV=production: no preview mode, no embedded database
    destinations: tuple[Destination, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def deployment_environment(env: Mapping[str, str]) -> str:
    """``HELIOX_ENV``: development (the default) or production."""
    raw = env.get(ENVIRONMENT_VAR, "").strip()
    value = raw.lower() or DEVELOPMENT
    if value not in (DEVELOPMENT, PRODUCTION):
        raise SettingsError(
            f"{ENVIRONMENT_VAR}={raw!r} is not an environment; allowed: development, production."
        )
    return value


def _production_problems(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """What ``HELIOX_ENV=production`` requires and the environment lacks: (webhook, database)."""
    webhook = database = None
    if not env.get(WEBHOOK_URL_VAR, "").strip():
        webhook = (
            f"{WEBHOOK_URL_VAR} is not set, and {ENVIRONMENT_VAR}=production sends every alert to "
            "Slack (no preview mode): set it to the URL of a Slack Incoming Webhook, or set "
            f"{ENVIRONMENT_VAR}=development to only preview messages."
        )
    if not env.get(DATABASE_URL_VAR, "").strip():
        database = (
            f"{DATABASE_URL_VAR} is not set, and {ENVIRONMENT_VAR}=production does not use the "
            "embedded SQLite file: set it to the Heliox database, e.g. "
            "'postgresql+psycopg2://heliox:password@host:5432/heliox'."
        )
    return webhook, database


def _destinations(
    env: Mapping[str, str], settings: Settings | None, default_url: str | None, problems: list[str]
) -> tuple[Destination, ...]:
    """Each kind's default webhook and each routed team's, validated like SLACK_WEBHOOK_URL; a
    team routed to a variable that is not set, or a SLACK_WEBHOOK_URL_* nobody reads (a typo
    would send a kind's alerts to the default channel unnoticed), is a problem."""
    checked: dict[str, str | None] = {WEBHOOK_URL_VAR: default_url}

    def webhook(variable: str) -> str | None:
        if variable not in checked:
            checked[variable] = None
            try:
                checked[variable] = validate_webhook_url(env.get(variable), variable=variable)
            except SettingsError as exc:
                problems.append(str(exc))
        return checked[variable]

    kinds = all_kinds()
    destinations = []
    for kind in kinds:
        variable = next((v for v in kind.webhook_variables() if env.get(v, "").strip()), WEBHOOK_URL_VAR)
        destinations.append(Destination(kind.name, variable, webhook(variable)))
    teams = settings.teams if settings is not None else ()
    for route in teams:
        if not env.get(route.webhook_env, "").strip():
            problems.append(
                f"{ROUTING_FILE_VAR}={settings.routing_file if settings else ''}: team {route.team!r} is "
                f"routed to {route.webhook_env}, which is not set; set {route.webhook_env} to the team's "
                "Slack webhook URL, or remove the team from the file."
            )
        destinations.append(Destination(f"team {route.team}", route.webhook_env, webhook(route.webhook_env)))
    read = {v for kind in kinds for v in kind.webhook_variables()} | {r.webhook_env for r in teams}
    for name in sorted(env):
        if name.startswith(f"{WEBHOOK_URL_VAR}_") and name not in read and env[name].strip():
            problems.append(
                f"{name} is set but is neither an alert kind's webhook "
                f"({', '.join(k.webhook_variable for k in kinds)}) nor a team's in {ROUTING_FILE_VAR}; "
                "correct its name or unset it."
            )
    if settings is not None and settings.alerts_enabled:
        unknown = [name for name in settings.alerts_enabled if name not in {k.name for k in kinds}]
        if unknown:
            problems.append(
                f"ALERTS_ENABLED names {', '.join(map(repr, unknown))}, not an alert kind; "
                f"choose among {', '.join(k.name for k in kinds)} (or all, none)."
            )
    return tuple(destinations)


def prometheus_problems(env: Mapping[str, str], settings: Settings) -> list[str]:
    """With ``PROMETHEUS_URL`` set: credentials given by halves or twice, or a label mapping file
    that cannot be used (the utilization pulls would fail on every run)."""
    if settings.prometheus_url is None:
        return []
    problems = []
    try:
        validate_credentials(env.get(BEARER_TOKEN_VAR), env.get(USERNAME_VAR), env.get(PASSWORD_VAR))
    except PrometheusConfigError as exc:
        problems.append(str(exc))
    try:
        load_mapping(settings.dcgm_mapping_path)
    except MappingError as exc:
        problems.append(str(exc))
    return problems


def check_environment(env: Mapping[str, str] | None = None) -> EnvironmentCheck:
    """Validate every load-time setting and collect each problem as one line."""
    env = os.environ if env is None else env
    problems: list[str] = []
    settings = webhook = None
    production = False
    try:
        production = deployment_environment(env) == PRODUCTION
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        problems.append(str(exc))
    if settings is not None:
        problems += prometheus_problems(env, settings)
    missing_webhook, missing_database = _production_problems(env) if production else (None, None)
    try:
        webhook = validate_webhook_url(env.get(WEBHOOK_URL_VAR))
    except SettingsError as exc:
        problems.append(str(exc))
    if missing_webhook:
        problems.append(missing_webhook)
    destinations = _destinations(env, settings, webhook, problems)
    database_url = env.get(DATABASE_URL_VAR, "").strip() or None
    database_problem = missing_database or (database_url_problem(database_url) if database_url else None)
    if database_problem:
        problems.append(database_problem)
    return EnvironmentCheck(
        settings, webhook, database_url, tuple(problems), database_problem, production, destinations
    )


def load_environment(env: Mapping[str, str] | None = None) -> Settings:
    """The settings, once the whole environment is valid; raises ``SettingsError`` with the
    first problem otherwise (definitions stop loading with that one message)."""
    check = check_environment(env)
    if check.problems:
        raise SettingsError(check.problems[0])
    assert check.settings is not None
    return check.settings
