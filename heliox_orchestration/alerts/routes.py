"""Where an alert goes: its kind's default webhook (``SLACK_WEBHOOK_URL_<KIND>``, else its
fallback kind's, else ``SLACK_WEBHOOK_URL``), or the webhook of a team of the routing file
(``HELIOX_ROUTING_FILE``). A finding of a routed team goes to the team's channel (and also to the
default one with ``copy_to_default``); a finding of any other team, or of none, to the default."""

from __future__ import annotations

from collections.abc import Iterable

from heliox_orchestration.alerts.kinds import AlertKind, destination_label, split_destination
from heliox_orchestration.resources.slack import SlackRoutes, SlackWebhook
from heliox_orchestration.settings import Settings


class UnknownDestination(LookupError):
    """A key for a team the routing file no longer names: nothing can deliver it."""


def webhook_for(slack: SlackRoutes, kind: AlertKind, team: str | None, settings: Settings) -> SlackWebhook:
    """The webhook of ``kind``'s alerts for ``team``'s channel (None: the kind's default)."""
    if team is None:
        return slack.route(kind.webhook_variables())
    route = settings.team_route(team)
    if route is None:
        raise UnknownDestination(f"team {team!r} is not in the routing file")
    return slack.route([route.webhook_env], fallback=False)


def team_of_key(key: str, settings: Settings) -> str | None:
    """The team whose channel ``key`` is for; None for the default destination. Raises
    ``UnknownDestination`` for a team the routing file no longer names."""
    label = split_destination(key)[1]
    if label is None:
        return None
    team = next((r.team for r in settings.teams if destination_label(r.team) == label), None)
    if team is None:
        raise UnknownDestination(f"{label!r} is not a team of the routing file (any more)")
    return team


def finding_destinations(team: str | None, settings: Settings) -> tuple[str | None, ...]:
    """Where the alert about a finding of ``team`` goes (None: the default destination)."""
    route = settings.team_route(team) if team is not None else None
    if route is None:
        return (None,)
    return (route.team, None) if route.copy_to_default else (route.team,)


def webhook_variables(settings: Settings, kinds: Iterable[AlertKind]) -> list[str]:
    """Every variable an alert may be routed to: each kind's, then each team's."""
    variables = [v for kind in kinds for v in kind.webhook_variables()]
    variables += [route.webhook_env for route in settings.teams]
    return list(dict.fromkeys(variables))
