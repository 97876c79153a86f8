"""What the Slack resource (``slack.py``) and its HTTP side (``slack_transport.py``) share: the
errors and the result of a send, the delivery policy, Slack's error strings, ``Retry-After`` and
the logger slack-sdk writes to.

Free of slack-sdk, so that both sides import it and neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dagster import MetadataValue

from heliox_orchestration.secrets import mask_webhook_url
from heliox_orchestration.settings import SettingsError

WEBHOOK_URL_VAR = "SLACK_WEBHOOK_URL"

# Slack's error strings for refusals that a retry cannot fix, and what the operator should do.
_REPLACE_WEBHOOK = f"create a new Incoming Webhook in Slack and put its URL in {WEBHOOK_URL_VAR}"
SLACK_ERROR_HELP: Mapping[str, str] = {
    "invalid_payload": "Slack could not parse the message; this is a Heliox bug, please report it",
    "invalid_blocks": "Slack refused the message's Block Kit; this is a Heliox bug, please report it",
    "invalid_blocks_format": "Slack refused the message's Block Kit; this is a Heliox bug, please report it",
    "no_text": "the message had no text; this is a Heliox bug, please report it",
    "too_many_attachments": "the message had too many attachments; this is a Heliox bug, please report it",
    "action_prohibited": "a Slack admin has restricted posting with this webhook; ask an admin to allow "
    f"the app in the channel, or {_REPLACE_WEBHOOK}",
    "posting_to_general_channel_denied": "only admins may post to this channel; "
    f"{_REPLACE_WEBHOOK} for another channel",
    "channel_not_found": f"the webhook's channel was deleted or the app removed from it; {_REPLACE_WEBHOOK}",
    "channel_is_archived": "the webhook's channel is archived; unarchive it in Slack, or "
    f"{_REPLACE_WEBHOOK} for another channel",
    "no_service": f"the webhook was disabled or removed, or {WEBHOOK_URL_VAR} is mistyped; "
    f"{_REPLACE_WEBHOOK}",
    "no_service_id": f"{WEBHOOK_URL_VAR} is incomplete; copy the whole URL from Slack again",
    "no_team": f"{WEBHOOK_URL_VAR} is incomplete; copy the whole URL from Slack again",
    "invalid_token": f"the webhook's token is invalid or revoked; {_REPLACE_WEBHOOK}",
    "team_disabled": "the Slack workspace of the webhook is disabled",
    "user_not_found": f"the webhook's user no longer exists; {_REPLACE_WEBHOOK}",
}


class SlackError(Exception):
    """Base of the Slack errors. Messages show the webhook only masked."""


class SlackConfigError(SettingsError, SlackError):
    """``SLACK_WEBHOOK_URL`` is unusable. The message names the variable, never its value."""


class SlackDeliveryError(SlackError):
    """A message was not delivered: Slack refused it, or kept failing through every retry."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        http_status: int | None = None,
        slack_error: str | None = None,
        retryable: bool = False,
        payload_sha256: str | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.http_status = http_status
        self.slack_error = slack_error
        self.retryable = retryable  # True: a later run may succeed; False: someone must fix something
        self.payload_sha256 = payload_sha256


@dataclass(frozen=True)
class SlackSendResult:
    """The outcome of one message, as the alert ledger records it."""

    status: Literal["sent", "previewed"]
    attempts: int  # HTTP requests made: 0 in preview mode
    http_status: int | None
    elapsed_seconds: float
    payload_sha256: str
    webhook: str  # masked
    preview_text: str | None = None  # the readable message, in preview mode

    def to_metadata(self) -> dict[str, MetadataValue]:
        """Dagster metadata (``context.add_output_metadata`` or ``MaterializeResult``)."""
        metadata: dict[str, MetadataValue] = {
            "slack_status": MetadataValue.text(self.status),
            "slack_webhook": MetadataValue.text(self.webhook),
            "slack_attempts": MetadataValue.int(self.attempts),
            "slack_elapsed_seconds": MetadataValue.float(round(self.elapsed_seconds, 3)),
            "slack_payload_sha256": MetadataValue.text(self.payload_sha256),
        }
        if self.http_status is not None:
            metadata["slack_http_status"] = MetadataValue.int(self.http_status)
        if self.preview_text is not None:
            metadata["slack_preview"] = MetadataValue.text(self.preview_text)
        return metadata


@dataclass(frozen=True)
class DeliveryPolicy:
    """How one message is sent: the ``SlackWebhook`` resource's fields of the same names."""

    timeout_seconds: int
    max_retries: int
    backoff_seconds: float
    max_retry_after_seconds: float
    min_interval_seconds: float
    variable: str = WEBHOOK_URL_VAR  # where the URL comes from: what a refusal tells to fix


def retry_after_seconds(headers: Mapping[str, Any], now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date); None when absent or unreadable."""
    values = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    raw = (values[0] if isinstance(values, list) else values or "").strip()
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max((when - (now or dt.datetime.now(dt.UTC))).total_seconds(), 0.0)


# --- what slack-sdk logs ------------------------------------------------------------------------

_ANY_URL = re.compile(r"https?://[^\s'\"<>|]+")
# WebhookClient logs this at ERROR for every request that raised. Heliox reports each failed
# attempt itself (the attempt, the reason and the wait) and the last one in the error it raises.
_SDK_FAILED_REQUEST = "Failed to send a request to Slack API server"


class _SlackSdkLog(logging.Filter):
    """slack-sdk's lines: its failed-request line dropped, any URL masked in the others."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_SDK_FAILED_REQUEST):
            return False
        record.msg = _ANY_URL.sub(self._mask, message)
        record.args = ()
        return True

    @staticmethod
    def _mask(match: re.Match[str]) -> str:
        url = match.group(0)
        trailing = url[len(url.rstrip(".,;:)]")) :]  # sentence punctuation, not part of the URL
        return mask_webhook_url(url[: len(url) - len(trailing)]) + trailing


# WebhookClient logs through this logger. Its level is set explicitly, when the definitions load,
# because the client decides whether to build its DEBUG lines (URL, body and headers included)
# from ``logger.level`` alone.
SLACK_SDK_LOGGER = logging.getLogger("heliox_orchestration.slack_sdk")
SLACK_SDK_LOGGER.setLevel(logging.WARNING)
SLACK_SDK_LOGGER.addFilter(_SlackSdkLog())
