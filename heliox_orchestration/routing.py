"""The routing file (``HELIOX_ROUTING_FILE``): which team's Slack channel hears about its own GPUs.

A team is mapped to the *name* of an environment variable that holds its webhook, so the file
holds no secret and can live in git, and to optional settings of its own::

    teams:
      ml-platform:
        webhook_env: SLACK_WEBHOOK_URL_ML_PLATFORM
        burn_rate_threshold_usd: 2500      # its own burn-rate alert, on its own daily spend
        monthly_budget_usd: 60000          # its own budget alerts, on its own month-to-date spend
      research:
        webhook_env: SLACK_WEBHOOK_URL_RESEARCH
        copy_to_default: true              # its idle findings also go to the default channel

A team is matched to usage rows by their ``team`` column, exactly. Whether each variable is set
and holds a usable webhook is checked with the environment (``environment.check_environment``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

ROUTING_FILE_VAR = "HELIOX_ROUTING_FILE"
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_TEAM_CHARS = 128  # gpu_usage_hourly.team
MIN_THRESHOLD, MAX_THRESHOLD = Decimal("0.01"), Decimal("1000000000")
MAX_BUDGET = Decimal("1000000000000")
_TEAM_KEYS = {"webhook_env", "burn_rate_threshold_usd", "copy_to_default", "monthly_budget_usd"}


class RoutingError(ValueError):
    """The routing file is unusable; one line naming the file, the team and the key."""


@dataclass(frozen=True)
class TeamRoute:
    team: str
    webhook_env: str  # the name of the variable holding the team's webhook, never its value
    burn_rate_threshold_usd: Decimal | None = None  # None: no burn-rate alert of its own
    copy_to_default: bool = False  # its idle findings (and their resolution) also go to the default
    monthly_budget_usd: Decimal | None = None  # None: no budget alerts of its own


def load_routing_file(path: str | Path | None) -> tuple[TeamRoute, ...]:
    """The teams of the routing file at ``path``; none when unset."""
    if path is None or not str(path).strip():
        return ()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RoutingError(
            f'{ROUTING_FILE_VAR}={path}: the file does not exist; create it (README "Routing") '
            f"or unset {ROUTING_FILE_VAR}."
        ) from None
    except OSError as exc:
        raise RoutingError(f"{ROUTING_FILE_VAR}={path}: cannot read the file ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise RoutingError(f"{ROUTING_FILE_VAR}={path}: the file is not UTF-8 text.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RoutingError(f"{ROUTING_FILE_VAR}={path}{where}: {problem}.") from None
    return parse_routing(raw, str(path))


def parse_routing(raw: Any, source: str = "routing") -> tuple[TeamRoute, ...]:
    """Validate a parsed routing document (see the module's example)."""
    where = f"{ROUTING_FILE_VAR}={source}"
    if not isinstance(raw, dict) or set(map(str, raw)) != {"teams"}:
        raise RoutingError(f"{where}: expected one top-level key, teams, mapping each team to its settings.")
    teams = raw["teams"]
    if not isinstance(teams, dict) or not teams:
        raise RoutingError(f"{where}: teams must map at least one team name to its settings.")
    return tuple(_team(str(name), value, where) for name, value in teams.items())


def _team(name: str, value: Any, where: str) -> TeamRoute:
    team = name.strip()
    if not team or len(team) > MAX_TEAM_CHARS or not team.isprintable() or team != name:
        raise RoutingError(
            f"{where}: team {name[:40]!r} must be 1-{MAX_TEAM_CHARS} printable characters without "
            "surrounding blanks, exactly as in the usage data's team column."
        )

    def fail(key: str, message: str) -> RoutingError:
        return RoutingError(f"{where}: team {team!r}: {key}: {message}")

    if not isinstance(value, dict):
        raise fail("webhook_env", "missing; give the name of the variable holding the team's webhook.")
    unknown = sorted(set(map(str, value)) - _TEAM_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(_TEAM_KEYS))}.")
    variable = value.get("webhook_env")
    if not isinstance(variable, str) or not VARIABLE_NAME.fullmatch(variable):
        raise fail(
            "webhook_env",
            "expected the NAME of an environment variable (e.g. SLACK_WEBHOOK_URL_ML_PLATFORM), "
            "never the webhook URL itself.",
        )
    copy = value.get("copy_to_default", False)
    if not isinstance(copy, bool):
        raise fail("copy_to_default", "expected true or false.")
    threshold = _dollars(value.get("burn_rate_threshold_usd"), fail, "burn_rate_threshold_usd", MAX_THRESHOLD)
    budget = _dollars(value.get("monthly_budget_usd"), fail, "monthly_budget_usd", MAX_BUDGET)
    return TeamRoute(team, variable, threshold, copy, budget)


def _dollars(raw: Any, fail: Any, key: str, highest: Decimal) -> Decimal | None:
    if raw is None:
        return None
    problem = f"expected dollars from {MIN_THRESHOLD} to {highest:,}, e.g. 2500."
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise fail(key, problem)
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise fail(key, problem) from None
    if not value.is_finite() or not MIN_THRESHOLD <= value <= highest:
        raise fail(key, problem)
    return value
