"""Mutes: ``heliox mute KIND [--team T | --resource R | --model M] --for 7d --reason "..."``.

A mute holds back the alerts of one kind (all of them, or those about one team, resource or
model) from ``muted_from`` until ``muted_until`` or until ``heliox unmute``; it ends by itself.
Sensors skip with "muted until ... by ...: reason", the alert op drops muted alerts and says so
in its metadata, and each alert a mute held back is recorded (``muted_alerts``), so that
``heliox alerts`` shows it as muted rather than missing. A muted alert is not sent later: when
the mute ends, what is still true alerts as usual (an idle GPU at the next idle check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from dagster import Failure
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject
from heliox_orchestration.alerts.kinds import REGISTRY, AlertKind
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.db.alert_schema import alert_mutes, muted_alerts
from heliox_orchestration.settings import Settings

MAX_REASON_CHARS = 500
MAX_BY_CHARS = 128
MAX_MUTE = dt.timedelta(days=366)
SCOPE_CHARS = {"team": 128, "resource": 255, "model": 255}  # their usage columns


class MuteError(ValueError):
    """A mute that cannot be stored or ended; one line saying what to fix."""


@dataclass(frozen=True)
class Mute:
    mute_id: int
    kind: str
    scope: str | None  # team | resource | model; None: every alert of the kind
    value: str | None
    muted_from: dt.datetime
    muted_until: dt.datetime
    reason: str
    created_by: str
    ended_at: dt.datetime | None = None
    ended_by: str | None = None

    def matches(self, subject: Subject) -> bool:
        return self.scope is None or getattr(subject, self.scope) == self.value

    def active(self, now: dt.datetime) -> bool:
        return self.ended_at is None and self.muted_from <= now < self.muted_until

    @property
    def what(self) -> str:
        scope = f" for {self.scope} {self.value}" if self.scope else ""
        return f"{self.kind}{scope}"

    def until_text(self, timezone: str) -> str:
        return f"{self.muted_until.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M} ({timezone})"

    def describe(self, timezone: str) -> str:
        """``muted until 2026-01-16 09:00 (UTC) by alice: planned training (mute 3)``"""
        until = self.until_text(timezone)
        return f"muted until {until} by {self.created_by}: {self.reason} (mute {self.mute_id})"


def _mute(row: object) -> Mute:
    r = row._mapping  # type: ignore[attr-defined]
    return Mute(
        r["mute_id"],
        r["alert_type"],
        r["scope"],
        r["scope_value"],
        r["muted_from"],
        r["muted_until"],
        r["reason"],
        r["created_by"],
        r["ended_at"],
        r["ended_by"],
    )


def _one_line(text: str, name: str, limit: int) -> str:
    text = text.strip()
    if not text or len(text) > limit or not text.isprintable():
        raise MuteError(f"{name} must be 1-{limit} printable characters on one line.")
    return text


def validate_mute(kind: AlertKind, scope: str | None, value: str | None, reason: str, by: str) -> None:
    """Refuse a mute the database would refuse or that could never match, before writing."""
    if scope is not None:
        if scope not in kind.mute_scopes:
            allowed = ", ".join(f"--{s}" for s in kind.mute_scopes) or "none: mute the whole kind"
            raise MuteError(f"{kind.name} alerts cannot be muted by {scope}; allowed: {allowed}.")
        _one_line(value or "", f"--{scope}", SCOPE_CHARS[scope])
    _one_line(reason, "--reason", MAX_REASON_CHARS)
    _one_line(by, "--by", MAX_BY_CHARS)


def add_mute(
    engine: Engine,
    kind: str,
    *,
    scope: str | None,
    value: str | None,
    until: dt.datetime,
    reason: str,
    by: str,
    now: dt.datetime,
) -> Mute:
    if kind not in REGISTRY:
        raise MuteError(f"unknown alert kind {kind!r}; choose one of {', '.join(REGISTRY)}.")
    validate_mute(REGISTRY[kind], scope, value, reason, by)
    if not now < until <= now + MAX_MUTE:
        raise MuteError("a mute must end after now and at most 366 days from now.")
    mute = Mute(
        0, kind, scope, value.strip() if value is not None else None, now, until, reason.strip(), by.strip()
    )
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(alert_mutes).values(
                alert_type=kind,
                scope=mute.scope,
                scope_value=mute.value,
                muted_from=now,
                muted_until=until,
                reason=mute.reason,
                created_by=mute.created_by,
            )
        ).inserted_primary_key
    assert inserted is not None
    return replace(mute, mute_id=int(inserted[0]))


def end_mute(engine: Engine, mute_id: int, *, by: str, now: dt.datetime) -> Mute:
    """End a mute now (``heliox unmute``)."""
    _one_line(by, "--by", MAX_BY_CHARS)
    c = alert_mutes.c
    with engine.begin() as conn:
        row = conn.execute(select(alert_mutes).where(c.mute_id == mute_id)).first()
        if row is None:
            raise MuteError(f"there is no mute {mute_id}; `heliox mutes --all` lists them.")
        mute = _mute(row)
        if not mute.active(now):
            ended = f"was ended by {mute.ended_by}" if mute.ended_at else "has expired"
            raise MuteError(f"mute {mute_id} ({mute.what}) {ended}; nothing to do.")
        conn.execute(
            update(alert_mutes).where(c.mute_id == mute_id).values(ended_at=now, ended_by=by.strip())
        )
    return replace(mute, ended_at=now, ended_by=by.strip())


def list_mutes(engine: Engine, now: dt.datetime, *, include_inactive: bool = False) -> list[Mute]:
    """Active mutes (``include_inactive``: every mute), soonest end first."""
    c = alert_mutes.c
    query = select(alert_mutes).order_by(c.muted_until, c.mute_id)
    if not include_inactive:
        query = query.where(c.ended_at.is_(None), c.muted_from <= now, c.muted_until > now)
    with engine.connect() as conn:
        return [_mute(row) for row in conn.execute(query)]


def active_mutes(engine: Engine, now: dt.datetime, kind: str) -> list[Mute]:
    """The mutes of ``kind`` in force at ``now``, the longest-lasting first."""
    return sorted(
        (m for m in list_mutes(engine, now) if m.kind == kind),
        key=lambda m: (-m.muted_until.timestamp(), m.mute_id),
    )


def mute_of(mutes: Sequence[Mute], subject: Subject) -> Mute | None:
    """The mute holding back an alert about ``subject`` (the longest-lasting), or None."""
    return next((m for m in mutes if m.matches(subject)), None)


def kind_wide(mutes: Sequence[Mute]) -> Mute | None:
    return next((m for m in mutes if m.scope is None), None)


def hold_back(detection: Detection, mutes: Sequence[Mute]) -> tuple[Detection, list[tuple[str, Mute]]]:
    """``detection`` without the keys a mute holds back (an alert left with none is dropped),
    and each held-back key with its mute."""
    if not mutes:
        return detection, []
    muted: list[tuple[str, Mute]] = []
    kept: list[Alert] = []
    for alert in detection.alerts:
        keys = []
        for key in alert.keys:
            mute = mute_of(mutes, alert.subjects.get(key, Subject(team=alert.team)))
            if mute is None:
                keys.append(key)
            else:
                muted.append((key, mute))
        if keys:
            kept.append(replace(alert, keys=keys) if len(keys) != len(alert.keys) else alert)
    return replace(detection, alerts=kept), muted


def record_muted(engine: Engine, kind: str, muted: Iterable[tuple[str, Mute]], now: dt.datetime) -> None:
    """Remember which alerts each mute held back (once per key and mute)."""
    c = muted_alerts.c
    for key, mute in muted:
        with engine.connect() as conn:
            seen = conn.execute(
                select(c.alert_key).where(c.alert_key == key, c.mute_id == mute.mute_id)
            ).first()
        if seen is not None:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(muted_alerts).values(
                        alert_key=key, mute_id=mute.mute_id, alert_type=kind, muted_at=now
                    )
                )
        except IntegrityError:
            pass  # another run recorded it meanwhile


def muted_summary(muted: Sequence[tuple[str, Mute]], timezone: str) -> list[dict[str, object]]:
    """The op's ``muted`` metadata: each held-back key and why."""
    return [{"key": key, "mute": mute.mute_id, "why": mute.describe(timezone)} for key, mute in muted]


def muted_entries(engine: Engine, since: dt.datetime | None = None, limit: int = 200) -> list[dict]:
    """Held-back alerts with their mute, newest first (``heliox alerts``)."""
    m, a = muted_alerts.c, alert_mutes.c
    query = (
        select(muted_alerts, alert_mutes)
        .join(alert_mutes, a.mute_id == m.mute_id)
        .order_by(m.muted_at.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(m.muted_at >= since)
    with engine.connect() as conn:
        return [
            {"alert_key": row.alert_key, "muted_at": row.muted_at, "mute": _mute(row)}
            for row in conn.execute(query)
        ]


def skip_reason(mute: Mute, timezone: str) -> str:
    """A sensor's skip reason for a mute."""
    return f"{mute.what} is {mute.describe(timezone)}."


def switched_off(kind: str, settings: Settings) -> str | None:
    """Why ``kind`` sends nothing (``ALERTS_ENABLED``), or None when it is on."""
    if settings.alert_enabled(kind):
        return None
    enabled = ", ".join(settings.alerts_enabled or ()) or "none"
    return f"{kind} alerts are switched off: ALERTS_ENABLED={enabled}."


def sensor_hold(
    kind: AlertKind, engine: Engine, settings: Settings, now: dt.datetime, config: Mapping[str, Any]
) -> str | None:
    """Why a sensor does not launch ``kind``'s job with ``config``: the kind is switched off, or
    every alert the job would send now is muted (recorded as muted); None: launch it."""
    off = switched_off(kind.name, settings)
    if off is not None:
        return off
    mutes = active_mutes(engine, now, kind.name)
    if not mutes:
        return None
    try:
        detection = kind.detect(AlertRun(engine, settings, now, kind.parse_config(config)))
    except (NotMaterializedError, Failure):
        # What the job would send is unknown; a mute of the whole kind holds all the same.
        whole = kind_wide(mutes)
        return skip_reason(whole, settings.timezone) if whole is not None else None
    kept, muted = hold_back(detection, mutes)
    if not muted or kept.alerts:
        return None
    record_muted(engine, kind.name, muted, now)
    return " ".join(dict.fromkeys(skip_reason(mute, settings.timezone) for _, mute in muted))
