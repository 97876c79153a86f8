"""Every alert kind, registered: importing this module imports each kind's module, whose entry
registers itself in ``alerts.kinds.REGISTRY``. A new kind is a new module here, one import line
below, its message (``alerts/messages.py``) and its detection."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from heliox_orchestration.alerts import (
    budget,
    burn_rate,
    daily_summary,
    idle_resolved,
    idle_spend,
    kinds,
    run_failure,
    spend_anomaly,
    stale_data,
)
from heliox_orchestration.alerts.kinds import AlertKind
from heliox_orchestration.alerts.preview import Preview
from heliox_orchestration.settings import Settings

KIND_MODULES = (
    burn_rate,
    idle_spend,
    idle_resolved,
    daily_summary,
    stale_data,
    run_failure,
    spend_anomaly,
    budget,
)


def all_kinds() -> list[AlertKind]:
    """Every registered kind (read at call time: a test may register one more)."""
    return list(kinds.REGISTRY.values())


def kinds_with(attribute: str) -> tuple[str, ...]:
    """The names of the kinds that have ``attribute`` (``manual``: `heliox run`; ``preview``)."""
    return tuple(kind.name for kind in all_kinds() if getattr(kind, attribute) is not None)


PREVIEW_KINDS = kinds_with("preview")


def kind_named(name: str) -> AlertKind:
    try:
        return kinds.REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown alert kind {name!r}; choose one of {', '.join(kinds.REGISTRY)}") from None


def preview_message(
    name: str, engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime | None = None
) -> Preview:
    """What the job of kind ``name`` would do on ``run_date``, computed from the database."""
    now = now or dt.datetime.now(dt.UTC)
    today = settings.today(now)
    if run_date > today:
        raise ValueError(f"{run_date} is after today ({today} in {settings.timezone})")
    kind = kind_named(name)
    if kind.preview is None:
        raise ValueError(f"{name} has no preview; choose one of {', '.join(kinds_with('preview'))}")
    return kind.preview(engine, settings, run_date, now)
