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

from heliox_orchestration.alerts.messages import SlackMessage
from heliox_orchestration.settings import Settings

# The message itself, or how to build it from the keys this run won (the idle alert lists only
# the findings it claimed).
MessageFor = SlackMessage | Callable[[Sequence[str]], SlackMessage]


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
class Alert:
    """One message to deliver once, and the ledger keys that stand for it."""

    keys: Sequence[str]
    message: MessageFor
    names: Mapping[str, str] = field(default_factory=dict)  # key -> what it stands for, in errors
    # Metadata computed from the keys this run won (e.g. how many findings went out).
    metadata_for: Callable[[Sequence[str]], Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Detection:
    """What a detection found: alerts to deliver, or none and why (``note``)."""

    alerts: Sequence[Alert] = ()
    note: str = ""
    status: str = "nothing to send"  # the op's "delivery" metadata when there is no alert
    metadata: Mapping[str, Any] = field(default_factory=dict)


def nothing(note: str, status: str = "nothing to send", **metadata: Any) -> Detection:
    return Detection((), note, status, metadata)
