"""What an alert kind's detection gets and returns: the contract between the registry entries
(``alerts/kinds.py``) and the one alert op that delivers every kind (``alerts/jobs.py``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import Config, DagsterInstance
from sqlalchemy import Engine

from heliox_orchestration.alerts.delivery import Delivery, MessageFor, deliver
from heliox_orchestration.alerts.kinds import AlertKind
from heliox_orchestration.resources.slack import SlackWebhook
from heliox_orchestration.settings import Settings


@dataclass(frozen=True)
class AlertRun:
    """Everything a detection may read: the database, the settings, the op's config, the
    instant it runs at and the Dagster instance (for alerts about runs)."""

    engine: Engine
    settings: Settings
    now: dt.datetime
    config: Config | None = None
    instance: DagsterInstance | None = None
    webhook_url: str | None = None  # to redact it from text that might quote it
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("heliox.alerts"))


@dataclass(frozen=True)
class Subject:
    """What an alert key is about, for ``heliox mute --team/--resource/--model``; None: not
    about one (the fleet's burn rate is about no team)."""

    team: str | None = None
    resource: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Alert:
    """One message to deliver once, to one destination, and the ledger keys that stand for it."""

    keys: Sequence[str]
    message: MessageFor
    names: Mapping[str, str] = field(default_factory=dict)  # key -> what it stands for, in errors
    # Metadata computed from the keys this run won (e.g. how many findings went out).
    metadata_for: Callable[[Sequence[str]], Mapping[str, Any]] | None = None
    team: str | None = None  # the destination: this team's channel; None: the kind's default one
    subjects: Mapping[str, Subject] = field(default_factory=dict)  # key -> what it is about
    # Called with the delivery once Slack took it (or it was previewed).
    on_delivered: Callable[[Delivery], None] | None = None


@dataclass(frozen=True)
class Detection:
    """What a detection found: alerts to deliver, or none and why (``note``)."""

    alerts: Sequence[Alert] = ()
    note: str = ""
    status: str = "nothing to send"  # the op's "delivery" metadata when there is no alert
    metadata: Mapping[str, Any] = field(default_factory=dict)


def nothing(note: str, status: str = "nothing to send", **metadata: Any) -> Detection:
    return Detection((), note, status, metadata)


def deliver_alert(
    kind: AlertKind,
    engine: Engine,
    slack: SlackWebhook,
    alert: Alert,
    *,
    now: dt.datetime,
    timezone: str,
    run_id: str | None = None,
) -> Delivery:
    """Claim the alert's keys and send it once (``delivery.deliver``), relevant as ``kind`` says."""
    return deliver(
        engine,
        slack,
        alert.keys,
        alert.message,
        alert_type=kind.name,
        relevant_until=kind.relevant_until(kind.parse(alert.keys[0]), now, timezone),
        now=now,
        timezone=timezone,
        run_id=run_id,
    )
