"""Sending an alert exactly once: claim its ledger keys, send, record the outcome.

An alert that fails after the Slack resource's retries stays ``failed`` in the ledger and the
error is raised, so the run fails visibly; ``alert_redelivery_sensor`` (or the next tick) claims
the failed keys again while they are relevant and redelivers, saying that the message is late.
A permanent refusal is recorded with the webhook's fingerprint and is not sent to that webhook
again. A key taken over from a run that stopped mid-send goes out marked as a possible repeat.

One key's ledger failure (claiming or recording it) never drops the others: they are sent and
recorded, then ``LedgerIncomplete`` names the keys that could not be.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.messages import SlackMessage, with_note
from heliox_orchestration.resources.slack import SlackDeliveryError, SlackSendResult, SlackWebhook
from heliox_orchestration.secrets import redact_webhook_url

# A redelivery more than this after the first attempt says so in the message.
LATE_AFTER = dt.timedelta(minutes=10)

log = logging.getLogger(__name__)

# The message itself, or how to build it from the keys this run won (the idle alert lists only
# the findings it claimed).
MessageFor = SlackMessage | Callable[[Sequence[str]], SlackMessage]


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert."""

    keys: tuple[str, ...]  # the ledger keys this run claimed (and so sent)
    skipped_keys: tuple[str, ...]  # already sent, being sent by another run, or no longer relevant
    result: SlackSendResult | None  # None: nothing was claimed, nothing was sent
    late: bool = False
    possible_repeat: bool = False

    @property
    def status(self) -> str:
        if self.result is None:
            return "skipped"
        return self.result.status


@dataclass(frozen=True)
class KeyFailure:
    key: str
    stage: str  # "claim" or "record"
    error: str  # masked, one line


class LedgerIncomplete(Exception):
    """Some keys could not be claimed or recorded; the others were delivered and recorded."""

    def __init__(self, delivery: Delivery, failures: Sequence[KeyFailure]) -> None:
        self.delivery = delivery
        self.failures = tuple(failures)
        super().__init__(
            f"{len(self.failures)} alert key(s) could not be claimed or recorded: "
            + "; ".join(f"{f.key} ({f.stage}: {f.error})" for f in self.failures)
        )


class AlertNotDelivered(SlackDeliveryError):
    """Slack did not take the alert; its keys are recorded ``failed`` (``refused``: permanently,
    by this webhook) and the redelivery sensor takes it from there."""

    def __init__(self, error: SlackDeliveryError, keys: Sequence[str], refused: bool) -> None:
        super().__init__(
            str(error),
            attempts=error.attempts,
            http_status=error.http_status,
            slack_error=error.slack_error,
            retryable=error.retryable,
            payload_sha256=error.payload_sha256,
        )
        self.keys = tuple(keys)
        self.refused = refused


def _local(instant: dt.datetime, timezone: str, now: dt.datetime | None = None) -> str:
    local = instant.astimezone(ZoneInfo(timezone))
    same_day = now is not None and local.date() == now.astimezone(ZoneInfo(timezone)).date()
    return f"{local:%H:%M}" if same_day else f"{local:%Y-%m-%d %H:%M}"


def late_note(first_due: dt.datetime, timezone: str, *, refused: bool = False) -> str:
    why = "the webhook configured then refused it" if refused else "Slack could not be reached then"
    return f"⏱ Late delivery: first due {_local(first_due, timezone)} ({timezone}); {why}."


def possible_repeat_note(stopped_at: dt.datetime, timezone: str, now: dt.datetime | None = None) -> str:
    return (
        f"⚠️ Possible repeat: a run stopped while sending this alert at {_local(stopped_at, timezone, now)} "
        f"({timezone}); it may already be in this channel."
    )


def _one_line(exc: BaseException, webhook_url: str | None) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return redact_webhook_url(text, webhook_url)[: ledger.MAX_ERROR_CHARS]


def claim_keys(
    engine: Engine,
    keys: Sequence[str],
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    run_id: str | None,
    live: bool,
    webhook: str | None = None,
) -> tuple[list[ledger.Claim], list[KeyFailure]]:
    """Claim each key on its own: one that cannot be claimed does not stop the others."""
    claims, failures = [], []
    for key in keys:
        try:
            won = ledger.claim(
                engine,
                key,
                alert_type=alert_type,
                relevant_until=relevant_until,
                now=now,
                run_id=run_id,
                live=live,
                webhook=webhook,
            )
        except Exception as exc:  # the database refused this key: report it, keep the rest
            failures.append(KeyFailure(key, "claim", _one_line(exc, None)))
            log.warning(f"Alert key {key!r} could not be claimed: {failures[-1].error}")
            continue
        if won is not None:
            claims.append(won)
    return claims, failures


def _record(engine: Engine, keys: Sequence[str], **outcome: Any) -> list[KeyFailure]:
    """Record on all keys at once; if that fails, key by key, so one bad key keeps its failure."""
    try:
        ledger.record(engine, keys, **outcome)
        return []
    except Exception:
        pass
    failures = []
    for key in keys:
        try:
            ledger.record(engine, [key], **outcome)
        except Exception as exc:
            failures.append(KeyFailure(key, "record", _one_line(exc, None)))
            log.warning(f"Outcome of alert key {key!r} could not be recorded: {failures[-1].error}")
    return failures


def _with_notes(
    message: SlackMessage, claims: Sequence[ledger.Claim], now: dt.datetime, timezone: str
) -> tuple[SlackMessage, bool, bool]:
    first_due = min(c.first_claimed_at for c in claims)
    repeats = [c for c in claims if c.is_possible_repeat]
    failed = [c for c in claims if c.previous_status == ledger.FAILED]
    late = bool(failed) and now - first_due >= LATE_AFTER
    if repeats:
        stopped_at = max(c.previous_updated_at or c.first_claimed_at for c in repeats)
        message = with_note(message, possible_repeat_note(stopped_at, timezone, now))
    if late:
        refused = all(c.previously_refused for c in failed)
        message = with_note(message, late_note(first_due, timezone, refused=refused))
    return message, late, bool(repeats)


class _AttemptCounter:
    """Counts each HTTP attempt in the ledger before it is made; a count that cannot be written
    is added when the outcome is recorded, so the total stays exact."""

    def __init__(self, engine: Engine, keys: Sequence[str], now: dt.datetime) -> None:
        self.engine, self.keys, self.now, self.counted = engine, keys, now, 0

    def __call__(self, _retry: int = 0) -> None:
        try:
            ledger.count_attempt(self.engine, self.keys, self.now)
            self.counted += 1
        except Exception as exc:
            log.warning(f"Could not count a Slack attempt in the ledger: {_one_line(exc, None)}")


def send_claimed(
    engine: Engine,
    slack: SlackWebhook,
    claims: Sequence[ledger.Claim],
    message: SlackMessage,
    *,
    now: dt.datetime,
    timezone: str,
) -> tuple[SlackSendResult, bool, bool, list[KeyFailure]]:
    """Send ``message`` for keys this run has claimed and record the outcome on each.
    Returns the result, whether it was late, whether it may be a repeat, and ledger failures."""
    keys = [c.key for c in claims]
    message, late, repeat = _with_notes(message, claims, now, timezone)
    url = slack.resolved_url()
    counter = _AttemptCounter(engine, keys, now)
    if url is not None:
        counter()
    try:
        result = slack.send(message, on_retry=counter)
    except SlackDeliveryError as exc:
        refused = not exc.retryable
        _record(
            engine,
            keys,
            status=ledger.FAILED,
            now=now,
            attempts=max(exc.attempts - counter.counted, 0),
            http_status=exc.http_status,
            error=redact_webhook_url(str(exc), url),
            payload_sha256=exc.payload_sha256,
            refused_webhook=slack.fingerprint() if refused else None,
        )
        raise AlertNotDelivered(exc, keys, refused) from None
    except Exception as exc:
        _record(
            engine,
            keys,
            status=ledger.FAILED,
            now=now,
            attempts=0,
            error=_one_line(exc, url),
        )
        raise
    failures = _record(
        engine,
        keys,
        status=ledger.SENT if result.status == "sent" else ledger.PREVIEWED,
        now=now,
        attempts=max(result.attempts - counter.counted, 0),
        http_status=result.http_status,
        payload_sha256=result.payload_sha256,
    )
    return result, late, repeat, failures


def deliver(
    engine: Engine,
    slack: SlackWebhook,
    keys: Sequence[str],
    message: MessageFor,
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    timezone: str,
    run_id: str | None = None,
) -> Delivery:
    """Claim ``keys``; send the message once if any was won. Raises ``AlertNotDelivered`` when
    Slack refuses or fails, ``LedgerIncomplete`` when a key could not be claimed or recorded."""
    claims, failures = claim_keys(
        engine,
        keys,
        alert_type=alert_type,
        relevant_until=relevant_until,
        now=now,
        run_id=run_id,
        live=slack.resolved_url() is not None,
        webhook=slack.fingerprint(),
    )
    won = tuple(c.key for c in claims)
    skipped = tuple(k for k in keys if k not in won and k not in {f.key for f in failures})
    if not claims:
        delivery = Delivery(keys=(), skipped_keys=skipped, result=None)
    else:
        built = message(won) if callable(message) else message
        result, late, repeat, record_failures = send_claimed(
            engine, slack, claims, built, now=now, timezone=timezone
        )
        failures.extend(record_failures)
        delivery = Delivery(won, skipped, result, late, repeat)
    if failures:
        raise LedgerIncomplete(delivery, failures)
    return delivery
