"""Sending an alert exactly once: claim its ledger keys, send, record the outcome.

An alert that fails after the Slack resource's retries stays ``failed`` in the ledger and the
error is raised, so the run fails visibly; the op's retry policy, or the next tick, claims the
failed keys again while they are relevant and redelivers, saying that the message is late.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.messages import SlackMessage, with_note
from heliox_orchestration.resources.slack import SlackDeliveryError, SlackSendResult, SlackWebhook
from heliox_orchestration.secrets import redact_webhook_url

# A redelivery more than this after the first attempt says so in the message.
LATE_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert."""

    keys: tuple[str, ...]  # the ledger keys this run claimed (and so sent)
    skipped_keys: tuple[str, ...]  # already sent, being sent by another run, or no longer relevant
    result: SlackSendResult | None  # None: nothing was claimed, nothing was sent
    late: bool = False

    @property
    def status(self) -> str:
        if self.result is None:
            return "skipped"
        return self.result.status


def late_note(first_due: dt.datetime, timezone: str) -> str:
    local = first_due.astimezone(ZoneInfo(timezone))
    return f"⏱ Late delivery: first due {local:%Y-%m-%d %H:%M} ({timezone}); Slack could not be reached then."


def claim_keys(
    engine: Engine,
    keys: Sequence[str],
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    run_id: str | None,
    live: bool,
) -> list[ledger.Claim]:
    claims = []
    for key in keys:
        won = ledger.claim(
            engine,
            key,
            alert_type=alert_type,
            relevant_until=relevant_until,
            now=now,
            run_id=run_id,
            live=live,
        )
        if won is not None:
            claims.append(won)
    return claims


def send_claimed(
    engine: Engine,
    slack: SlackWebhook,
    claims: Sequence[ledger.Claim],
    message: SlackMessage,
    *,
    now: dt.datetime,
    timezone: str,
) -> tuple[SlackSendResult, bool]:
    """Send ``message`` for keys this run has claimed and record the outcome on each."""
    keys = [c.key for c in claims]
    first_due = min(c.first_claimed_at for c in claims)
    late = any(c.is_redelivery for c in claims) and now - first_due >= LATE_AFTER
    if late:
        message = with_note(message, late_note(first_due, timezone))
    try:
        result = slack.send(message)
    except SlackDeliveryError as exc:
        ledger.record(
            engine,
            keys,
            status=ledger.FAILED,
            now=now,
            attempts=exc.attempts,
            http_status=exc.http_status,
            error=redact_webhook_url(str(exc), slack.webhook_url),
            payload_sha256=exc.payload_sha256,
        )
        raise
    except Exception as exc:
        ledger.record(
            engine,
            keys,
            status=ledger.FAILED,
            now=now,
            attempts=0,
            error=redact_webhook_url(f"{type(exc).__name__}: {exc}", slack.webhook_url),
        )
        raise
    ledger.record(
        engine,
        keys,
        status=ledger.SENT if result.status == "sent" else ledger.PREVIEWED,
        now=now,
        attempts=result.attempts,
        http_status=result.http_status,
        payload_sha256=result.payload_sha256,
    )
    return result, late


def deliver(
    engine: Engine,
    slack: SlackWebhook,
    keys: Sequence[str],
    message: SlackMessage,
    *,
    alert_type: str,
    relevant_until: dt.datetime,
    now: dt.datetime,
    timezone: str,
    run_id: str | None = None,
) -> Delivery:
    """Claim ``keys``; send ``message`` once if any was won. Raises when Slack refuses or fails."""
    claims = claim_keys(
        engine,
        keys,
        alert_type=alert_type,
        relevant_until=relevant_until,
        now=now,
        run_id=run_id,
        live=slack.resolved_url() is not None,
    )
    won = tuple(c.key for c in claims)
    skipped = tuple(k for k in keys if k not in won)
    if not claims:
        return Delivery(keys=(), skipped_keys=skipped, result=None)
    result, late = send_claimed(engine, slack, claims, message, now=now, timezone=timezone)
    return Delivery(keys=won, skipped_keys=skipped, result=result, late=late)
