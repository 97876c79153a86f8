"""⏳ GPU Cost Data Is Stale: one alert per gap in the usage data, launched by
``stale_data_sensor`` during the checking hours (a silent pipeline must not look like a cheap day)."""

from __future__ import annotations

import datetime as dt

from dagster import Config
from pydantic import Field

from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection
from heliox_orchestration.alerts.kinds import DAY, AlertKind, KeyField, for_, register
from heliox_orchestration.alerts.messages import stale_data_message

NO_DATA = "no-data"


class StaleDataAlertConfig(Config):
    newest_usage_hour: str | None = Field(
        default=None, description="ISO instant of the newest usage hour; empty when there is none."
    )


def detect_stale_data(run: AlertRun) -> Detection:
    assert isinstance(run.config, StaleDataAlertConfig)
    text = run.config.newest_usage_hour
    newest = dt.datetime.fromisoformat(text) if text else None
    settings = run.settings
    message = stale_data_message(newest, run.now, settings.stale_data_hours, settings.timezone)
    return Detection([Alert([stale_key(newest)], message)])


STALE_DATA = register(
    AlertKind(
        name="stale-data",
        job_name="stale_data_alert_job",
        op_name="send_stale_data_alert",
        description="⏳ GPU cost data is stale (launched by the stale-data sensor).",
        fields=(KeyField("newest_usage_hour"),),
        relevance="24 hours after each attempt",
        relevant_until=for_(DAY),
        detect=detect_stale_data,
        config=StaleDataAlertConfig,
        redelivery_config=lambda f: {
            "newest_usage_hour": None if f["newest_usage_hour"] == NO_DATA else f["newest_usage_hour"]
        },
        redelivery_scope=lambda f: f["newest_usage_hour"],
    )
)


def stale_key(newest_usage_hour: dt.datetime | None) -> str:
    return STALE_DATA.key(newest_usage_hour.isoformat() if newest_usage_hour else NO_DATA)
