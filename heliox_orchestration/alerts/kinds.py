"""The alert kinds: one registry entry per kind of Slack alert, and the one place ledger keys are
built and parsed.

An entry names the kind's job and op, its detection (what to send, from the database), its op
config, the fields of its ledger key, how long an alert stays relevant (a failed delivery is
redelivered until then), whether failures are redelivered, what launches it (``AfterRefresh``:
a sensor the wiring builds from the entry) and how ``heliox run`` and ``heliox preview`` run it.
The alert jobs, the sensors, the redelivery sensor, ``heliox run`` and the ledger read it: adding
a kind is one entry (in its own module under ``alerts/``, imported by ``alerts/catalog.py``) plus
its message and its detection.

A key is ``<kind>:<field>:<field>...`` and fits the ledger's 255-character column whatever the
values: a free-text field (a resource id, a run id, a timestamp) is kept as it is when it is
printable and shorter than ``FIELD_MAX`` characters; otherwise it becomes a readable prefix plus
a hash of the whole value, exactly ``FIELD_MAX`` characters long, so it can never equal a kept
value. The same value always gives the same key, so keys stay prefix-matchable per resource.
At most one field of a kind is free text (it may contain ``:``); the others may not.

The destination of an alert is part of its key: an alert for a team's channel (``HELIOX_ROUTING_FILE``)
has the team after the kind's name, ``idle-spend@ml-platform:<resource>:2026-W02``, fitted like a
free-text field but never holding ``:``; an alert for the kind's default channel has none, so the
keys of the default destination are those of a Heliox without routing. The same finding alerted
to its team and to the default is two keys, each delivered once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import Config, DagsterRun, RunRequest
from sqlalchemy import Engine

from heliox_orchestration.partitions import local_day_bounds
from heliox_orchestration.resources.slack_types import WEBHOOK_URL_VAR
from heliox_orchestration.run_config import op_config
from heliox_orchestration.settings import Settings

# Types only: the detection types import delivery and the ledger, which read this registry.
if TYPE_CHECKING:
    from heliox_orchestration.alerts.detection import AlertRun, Detection
    from heliox_orchestration.alerts.preview import Preview

MAX_KEY_CHARS = 255  # alert_ledger.alert_key is String(255); a test keeps the two in step
MAX_KIND_CHARS = 32  # alert_ledger.alert_type is String(32)
FIELD_MAX = 80  # two free-text fields (a resource and a destination) still fit
HASH_CHARS = 16
SEP = ":"
DEST_SEP = "@"  # between the kind's name and a team destination, before the first SEP
KIND_NAME = re.compile(r"[a-z][a-z0-9-]*")  # SLACK_WEBHOOK_URL_<NAME> is derived from it
MUTE_SCOPES = ("team", "resource", "model")

# The Failure metadata with which an alert op says "Slack did not take these keys"; the
# run-failure sensor reads it (alerts/run_failure.py).
SLACK_DELIVERY_METADATA = "slack_delivery"
ALERT_KEYS_METADATA = "alert_keys"

Fields = Mapping[str, str]


class AlertKeyError(ValueError):
    """A key that belongs to no registered kind, or does not fit its kind's fields."""


def fit(value: str, *, forbidden: str = "") -> str:
    """``value`` itself when short and printable (and free of ``forbidden`` characters), else a
    readable prefix plus its hash, exactly ``FIELD_MAX`` characters long."""
    if len(value) < FIELD_MAX and value.isprintable() and value and not set(forbidden) & set(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    readable = "".join(ch if ch.isprintable() and ch not in forbidden else "?" for ch in value)
    return f"{readable[: FIELD_MAX - HASH_CHARS - 1]}~{digest}"


def destination_label(team: str | None) -> str | None:
    """How a team destination appears in keys; None for the kind's default destination."""
    return None if team is None else fit(team, forbidden=SEP)


def split_destination(key: str) -> tuple[str, str | None]:
    """(the kind's name, the destination label or None) of ``key``."""
    name, at, label = key.partition(SEP)[0].partition(DEST_SEP)
    return name, (label if at else None)


def kind_webhook_variable(name: str) -> str:
    """``SLACK_WEBHOOK_URL_BURN_RATE`` for ``burn-rate``: the kind's own webhook."""
    return f"{WEBHOOK_URL_VAR}_{name.upper().replace('-', '_')}"


@dataclass(frozen=True)
class KeyField:
    name: str
    max_chars: int | None = None  # None: free text, fitted to FIELD_MAX characters

    @property
    def free_text(self) -> bool:
        return self.max_chars is None

    @property
    def width(self) -> int:
        return FIELD_MAX if self.max_chars is None else self.max_chars

    def check(self, text: str, kind: str) -> str:
        fixed_problem = not self.free_text and SEP in text
        if not text or len(text) > self.width or not text.isprintable() or fixed_problem:
            raise AlertKeyError(
                f"{kind} key field {self.name} must be 1-{self.width} printable characters"
                f"{'' if self.free_text else ' without ' + repr(SEP)}; got {text[:40]!r}"
            )
        return text


def _no_config(fields: Fields) -> Mapping[str, object] | None:
    return None


def _one_run(fields: Fields) -> str:
    return ""


@dataclass(frozen=True)
class AfterRefresh:
    """Launch the kind's job after each successful run of ``refresh_job`` (except the refreshes
    ``heliox run`` starts, which runs the alert itself): the wiring builds this sensor."""

    sensor_name: str
    refresh_job: str
    description: str
    # The op config of the alert run from the refresh run, or why there is nothing to alert.
    config: Callable[[DagsterRun], Mapping[str, object] | str] = lambda run: {}
    tags: Callable[[Mapping[str, object]], Mapping[str, str]] = lambda config: {}


@dataclass(frozen=True)
class ManualRun:
    """How ``heliox run <kind>`` runs the check now: the refresh (and its partition), then the
    alert job with this config."""

    refresh_job: str
    partition: Callable[[Settings, dt.datetime], str | None]
    config: Callable[[Settings, dt.datetime], Mapping[str, object]]


PreviewFn = Callable[[Engine, Settings, dt.date, dt.datetime], "Preview"]


@dataclass(frozen=True)
class AlertKind:
    """One kind of alert, everything the wiring needs to detect, key, deliver and redeliver it."""

    name: str
    job_name: str
    op_name: str
    fields: tuple[KeyField, ...]
    relevance: str  # how long an alert stays relevant, in words (docs, sensor descriptions)
    relevant_until: Callable[[Fields, dt.datetime, str], dt.datetime]  # (fields, now, timezone)
    detect: Callable[[AlertRun], Detection]  # what to send now, from the database
    description: str = ""  # the job's description in the UI
    config: type[Config] | None = None  # the op's config
    trigger: AfterRefresh | None = None  # None: a sensor of automation/sensors.py launches it
    manual: ManualRun | None = None  # `heliox run <name>`
    preview: PreviewFn | None = None  # `heliox preview <name>`
    redelivered: bool = True
    # The op config that redelivers a failed key; None: the op finds its failed keys itself.
    redelivery_config: Callable[[Fields], Mapping[str, object] | None] = _no_config
    # Failed keys of one scope are redelivered by one run (the levels of a day, all idle findings).
    redelivery_scope: Callable[[Fields], str] = _one_run
    # Its alerts may go to a team's channel (HELIOX_ROUTING_FILE) besides the default one.
    team_routed: bool = False
    # What `heliox mute <name>` may narrow a mute to (besides the whole kind).
    mute_scopes: tuple[str, ...] = ()
    # The kind whose webhook this kind uses when its own variable is unset (then SLACK_WEBHOOK_URL).
    webhook_fallback: str | None = None

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def longest_key(self) -> int:
        destination = len(DEST_SEP) + FIELD_MAX if self.team_routed else 0
        return len(self.name) + destination + sum(f.width + len(SEP) for f in self.fields)

    @property
    def webhook_variable(self) -> str:
        return kind_webhook_variable(self.name)

    def webhook_variables(self) -> tuple[str, ...]:
        """Where its default destination's webhook comes from, first set wins: its own variable,
        its fallback kind's, then ``SLACK_WEBHOOK_URL``."""
        fallback = REGISTRY.get(self.webhook_fallback) if self.webhook_fallback else None
        rest = fallback.webhook_variables() if fallback is not None else (WEBHOOK_URL_VAR,)
        return (self.webhook_variable, *rest)

    def _head(self, destination: str | None) -> str:
        if destination is None:
            return self.name
        if not self.team_routed:
            raise AlertKeyError(f"{self.name} alerts go to the default destination only")
        return f"{self.name}{DEST_SEP}{destination_label(destination)}"

    def key(self, *values: object, team: str | None = None) -> str:
        """The ledger key of these field values (free-text values fitted), for the default
        destination or ``team``'s channel."""
        if len(values) != len(self.fields):
            raise TypeError(f"{self.name} keys take {', '.join(self.field_names)}")
        texts = [fit(str(v)) if f.free_text else str(v) for f, v in zip(self.fields, values, strict=True)]
        return self.join(dict(zip(self.field_names, texts, strict=True)), team=team)

    def join(self, fields: Fields, *, team: str | None = None) -> str:
        """The key of already-fitted fields, as ``parse`` returns them."""
        texts = [f.check(fields[f.name], self.name) for f in self.fields]
        return SEP.join((self._head(team), *texts))

    def prefix(self, *leading: object, team: str | None = None) -> str:
        """What every key of this destination whose first fields are ``leading`` starts with."""
        texts = [
            fit(str(v)) if f.free_text else f.check(str(v), self.name)
            for f, v in zip(self.fields, leading, strict=False)
        ]
        return SEP.join((self._head(team), *texts)) + SEP

    def prefix_of(self, key: str) -> str:
        """``key`` without its last field: the prefix shared by the same alert's other keys."""
        fields = self.parse(key)
        head = key.partition(SEP)[0]
        return SEP.join((head, *(fields[n] for n in self.field_names[:-1]))) + SEP

    def parse(self, key: str) -> dict[str, str]:
        """The fields of ``key`` (of any destination)."""
        _, sep, rest = key.partition(SEP)
        name, label = split_destination(key)
        if name != self.name or not sep or (label is not None and not self._label_ok(label)):
            raise AlertKeyError(f"{key[:60]!r} is not a {self.name} key")
        n = len(self.fields)
        free = [i for i, f in enumerate(self.fields) if f.free_text]
        if free:
            i = free[0]
            *before, middle = rest.split(SEP, i)
            after = middle.rsplit(SEP, n - i - 1) if n - i - 1 else [middle]
            values = [*before, *after] if len(before) == i else []
        else:
            values = rest.split(SEP)
        if len(values) != n:
            raise AlertKeyError(f"{key[:60]!r} does not have the fields {', '.join(self.field_names)}")
        return {f.name: f.check(v, self.name) for f, v in zip(self.fields, values, strict=True)}

    def _label_ok(self, label: str) -> bool:
        return self.team_routed and 0 < len(label) <= FIELD_MAX and label.isprintable()

    def run_config(self, **config: object) -> dict:
        """Run config of this kind's job: its op's config."""
        return op_config(self.op_name, **config)

    def parse_config(self, values: Mapping[str, Any]) -> Config | None:
        return self.config(**values) if self.config is not None else None

    def redelivery_request(self, key: str, failed_at: dt.datetime) -> RunRequest | None:
        """The run that sends failed ``key`` again; one run per scope and failure."""
        if not self.redelivered:
            return None
        fields = self.parse(key)
        scope = self.redelivery_scope(fields)
        config = self.redelivery_config(fields)
        stamp = failed_at.isoformat()
        return RunRequest(
            job_name=self.job_name,
            run_key=SEP.join(p for p in ("redeliver", self.name, scope, stamp) if p),
            run_config=self.run_config(**config) if config is not None else {},
        )


REGISTRY: dict[str, AlertKind] = {}


def register(kind: AlertKind) -> AlertKind:
    """Add ``kind``; refuses one whose keys could overflow the ledger or not parse back."""
    problems = []
    if not KIND_NAME.fullmatch(kind.name) or len(kind.name) > MAX_KIND_CHARS:
        problems.append(f"its name must be 1-{MAX_KIND_CHARS} lowercase letters, digits and '-'")
    if kind.name in REGISTRY:
        problems.append("that name is registered already")
    if not kind.fields or sum(f.free_text for f in kind.fields) > 1:
        problems.append("it needs key fields, at most one of them free text")
    if kind.longest_key > MAX_KEY_CHARS:
        problems.append(f"its longest key has {kind.longest_key} characters (max {MAX_KEY_CHARS})")
    if set(kind.mute_scopes) - set(MUTE_SCOPES):
        problems.append(f"its mute scopes must be among {', '.join(MUTE_SCOPES)}")
    if kind.webhook_fallback is not None and kind.webhook_fallback not in REGISTRY:
        problems.append(f"its webhook fallback {kind.webhook_fallback!r} is not registered (yet)")
    if problems:
        raise ValueError(f"alert kind {kind.name!r}: {'; '.join(problems)}")
    REGISTRY[kind.name] = kind
    return kind


def kind_of(key: str) -> AlertKind:
    name = split_destination(key)[0]
    try:
        return REGISTRY[name]
    except KeyError:
        raise AlertKeyError(f"{key[:60]!r} belongs to no alert kind ({', '.join(REGISTRY)})") from None


def check_key(key: str) -> AlertKind:
    """The kind of ``key``; raises ``AlertKeyError`` unless it parses and fits the ledger."""
    if len(key) > MAX_KEY_CHARS:
        raise AlertKeyError(f"alert key of {len(key)} characters is longer than {MAX_KEY_CHARS}")
    kind = kind_of(key)
    kind.parse(key)
    return kind


def redelivery_request(key: str, failed_at: dt.datetime) -> RunRequest | None:
    """The run that redelivers ``key``; None for a kind that is not redelivered or unknown."""
    try:
        kind = check_key(key)
    except AlertKeyError:
        return None
    return kind.redelivery_request(key, failed_at)


def redelivered_job_names() -> list[str]:
    return sorted({k.job_name for k in REGISTRY.values() if k.redelivered})


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def end_of_day(field: str, days_after: int = 0) -> Callable[[Fields, dt.datetime, str], dt.datetime]:
    """Relevant until the end of the local day named by ``field`` (plus ``days_after`` days)."""

    def until(fields: Fields, now: dt.datetime, timezone: str) -> dt.datetime:
        day = dt.date.fromisoformat(fields[field]) + dt.timedelta(days=days_after)
        return local_day_bounds(day, timezone)[1]

    return until


def for_(delta: dt.timedelta) -> Callable[[Fields, dt.datetime, str], dt.datetime]:
    """Relevant for ``delta`` after each attempt."""

    def until(fields: Fields, now: dt.datetime, timezone: str) -> dt.datetime:
        return now + delta

    return until


DAY = dt.timedelta(hours=24)
