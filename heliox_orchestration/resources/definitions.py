"""Resource wiring: secrets reach the resources through EnvVar, never as literal values."""

from __future__ import annotations

from dagster import Definitions

from heliox_orchestration.resources import env_secret
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook, webhook_url_from_env
from heliox_orchestration.settings import DATABASE_URL_VAR, Settings


def build_resource_defs(settings: Settings) -> Definitions:
    # A malformed webhook URL stops loading here, with one message, rather than at the first alert.
    webhook_url_from_env()
    return Definitions(
        resources={
            "heliox_db": HelioxDatabase(url=env_secret(DATABASE_URL_VAR)),
            "slack": SlackWebhook(webhook_url=env_secret(WEBHOOK_URL_VAR)),
        }
    )
