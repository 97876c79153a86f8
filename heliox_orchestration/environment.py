"""Everything the code location validates when it loads, in one place: the settings, the
Slack webhook URL and the Heliox database URL. ``heliox doctor`` runs exactly this, so it can
never call a configuration healthy that stops the definitions from loading."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, validate_webhook_url
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings, SettingsError, load_settings


@dataclass(frozen=True)
class EnvironmentCheck:
    settings: Settings | None  # None when a setting is invalid
    webhook_url: str | None  # validated; None in preview mode or when invalid
    database_url: str | None  # None: the embedded default
    problems: tuple[str, ...] = field(default=())
    database_problem: str | None = None  # also in problems

    @property
    def ok(self) -> bool:
        return not self.problems


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


def check_environment(env: Mapping[str, str] | None = None) -> EnvironmentCheck:
    """Validate every load-time setting and collect each problem as one line."""
    env = os.environ if env is None else env
    problems: list[str] = []
    settings = webhook = None
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        webhook = validate_webhook_url(env.get(WEBHOOK_URL_VAR))
    except SettingsError as exc:
        problems.append(str(exc))
    database_url = env.get(DATABASE_URL_VAR, "").strip() or None
    database_problem = database_url_problem(database_url) if database_url else None
    if database_problem:
        problems.append(database_problem)
    return EnvironmentCheck(settings, webhook, database_url, tuple(problems), database_problem)


def load_environment(env: Mapping[str, str] | None = None) -> Settings:
    """The settings, once the whole environment is valid; raises ``SettingsError`` with the
    first problem otherwise (definitions stop loading with that one message)."""
    check = check_environment(env)
    if check.problems:
        raise SettingsError(check.problems[0])
    assert check.settings is not None
    return check.settings
