"""Resource wiring: secrets reach the resources through EnvVar, never as literal values; the
non-secret settings reach ops, sensors and checks as the ``heliox_settings`` resource."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from dagster import EnvVar

from heliox_orchestration.resources import env_secret
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.prometheus import PrometheusSource
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackRoutes, webhook_url_from_env
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings


def slack_routes(webhook_variables: Iterable[str], **delivery: Any) -> SlackRoutes:
    """``SLACK_WEBHOOK_URL`` and every other webhook variable that is set, each through EnvVar."""
    webhooks: dict[str, str] = {
        v: EnvVar(v) for v in webhook_variables if v != WEBHOOK_URL_VAR and v in os.environ
    }
    return SlackRoutes(webhook_url=env_secret(WEBHOOK_URL_VAR), webhooks=webhooks, **delivery)


def heliox_resources(settings: Settings, webhook_variables: Iterable[str] = ()) -> dict[str, Any]:
    """``webhook_variables``: every variable an alert may be routed to (``alerts.routes``)."""
    # A malformed webhook URL stops loading here, with one message, rather than at the first alert.
    webhook_url_from_env()
    resources: dict[str, Any] = {
        "heliox_db": HelioxDatabase(url=env_secret(DATABASE_URL_VAR)),
        "slack": slack_routes(webhook_variables),
        "heliox_settings": HelioxSettings.of(settings),
    }
    if settings.prometheus_url is not None:
        resources["prometheus"] = PrometheusSource.from_environment()
    return resources
