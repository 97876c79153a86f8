"""Resource wiring: secrets reach the resources through EnvVar, never as literal values; the
non-secret settings reach ops, sensors and checks as the ``heliox_settings`` resource."""

from __future__ import annotations

from typing import Any

from heliox_orchestration.resources import env_secret
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.prometheus import PrometheusSource
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook, webhook_url_from_env
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings


def heliox_resources(settings: Settings) -> dict[str, Any]:
    # A malformed webhook URL stops loading here, with one message, rather than at the first alert.
    webhook_url_from_env()
    resources: dict[str, Any] = {
        "heliox_db": HelioxDatabase(url=env_secret(DATABASE_URL_VAR)),
        "slack": SlackWebhook(webhook_url=env_secret(WEBHOOK_URL_VAR)),
        "heliox_settings": HelioxSettings.of(settings),
    }
    if settings.prometheus_url is not None:
        resources["prometheus"] = PrometheusSource.from_environment()
    return resources
